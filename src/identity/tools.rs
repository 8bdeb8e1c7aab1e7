//! The tool table: Go main package path → canonical tool name, from data
//! files the user can extend.
//!
//! # Where the tables live
//! `tools.toml` in each rules directory of `sensor.rules`, in that order
//! (shipped: `/usr/share/execsentry/rules/tools.toml`; yours:
//! `/etc/execsentry/rules.d/tools.toml`), then each file of
//! `identity.tools`. A later entry for the same main path replaces the
//! earlier one, so a local file can add tools and rename shipped ones.
//!
//! # Format
//! ```toml
//! [[metadata.tool]]
//! name = "docker"                                # [a-z0-9._-], ≤ 64
//! main = ["github.com/docker/cli/cmd/docker"]    # exact main package paths
//! ```
//! The table sits under `[metadata]` because the file shares a directory
//! with the rules: the rule loader ignores `[metadata]`, so the file is a
//! valid (empty) rule file too. Any other key is an error with `file:line`.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use toml::Spanned;

/// Larger tool files are refused before parsing.
const MAX_FILE_BYTES: u64 = 1 << 20;
const FILE_NAME: &str = "tools.toml";

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ToolTable {
    by_main: HashMap<String, String>,
}

/// Every problem found, one `file:line:col: what` a line.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}", .errors.join("\n"))]
pub struct ToolsError {
    pub errors: Vec<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Doc {
    #[serde(default)]
    metadata: Meta,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct Meta {
    #[serde(default)]
    tool: Vec<Entry>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Entry {
    name: Spanned<String>,
    main: Vec<Spanned<String>>,
}

impl ToolTable {
    /// The canonical tool built from `main`, if the table knows it.
    pub fn tool_for(&self, main: &str) -> Option<&str> {
        self.by_main.get(main).map(String::as_str)
    }

    pub fn len(&self) -> usize {
        self.by_main.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_main.is_empty()
    }

    /// The files to load: `tools.toml` of each existing rules directory,
    /// then the configured extra files (which must exist).
    pub fn paths(rule_paths: &[PathBuf], extra: &[PathBuf]) -> Vec<PathBuf> {
        rule_paths
            .iter()
            .filter(|p| p.is_dir())
            .map(|p| p.join(FILE_NAME))
            .filter(|p| p.is_file())
            .chain(extra.iter().cloned())
            .collect()
    }

    pub fn load(paths: &[PathBuf]) -> Result<ToolTable, ToolsError> {
        let mut sources = Vec::new();
        let mut errors = Vec::new();
        for p in paths {
            match read_capped(p) {
                Ok(t) => sources.push((p.display().to_string(), t)),
                Err(e) => errors.push(format!("{}: {e}", p.display())),
            }
        }
        if !errors.is_empty() {
            return Err(ToolsError { errors });
        }
        ToolTable::from_sources(&sources)
    }

    /// Parses `(name, text)` pairs in order; later entries win.
    pub fn from_sources(sources: &[(String, String)]) -> Result<ToolTable, ToolsError> {
        let mut table = ToolTable::default();
        let mut errors = Vec::new();
        for (name, text) in sources {
            let doc: Doc = match toml::from_str(text) {
                Ok(d) => d,
                Err(e) => {
                    let at = e.span().map_or("0:0".into(), |s| line_col(text, s.start));
                    errors.push(format!("{name}:{at}: {}", e.message().trim_end()));
                    continue;
                }
            };
            let mut seen: HashMap<&str, usize> = HashMap::new();
            for entry in &doc.metadata.tool {
                let at = |s: &Spanned<String>| format!("{name}:{}", line_col(text, s.span().start));
                let tool = entry.name.get_ref();
                if !valid_tool(tool) {
                    errors.push(format!(
                        "{}: tool name `{tool}` must be 1-64 of a-z 0-9 . _ -",
                        at(&entry.name)
                    ));
                }
                if entry.main.is_empty() {
                    errors.push(format!("{}: `main` lists no package path", at(&entry.name)));
                }
                for m in &entry.main {
                    let path = m.get_ref().as_str();
                    let line = line_of(text, m.span().start);
                    let pos = line_col(text, m.span().start);
                    if path.is_empty()
                        || path.len() > 512
                        || path.chars().any(|c| c.is_whitespace() || c.is_control())
                    {
                        errors.push(format!("{name}:{pos}: `{path}` is not a Go package path"));
                    } else if let Some(first) = seen.insert(path, line) {
                        errors.push(format!(
                            "{name}:{pos}: `{path}` is listed twice in this file (first on line {first})"
                        ));
                    } else {
                        table.by_main.insert(path.to_string(), tool.clone());
                    }
                }
            }
        }
        if errors.is_empty() {
            Ok(table)
        } else {
            Err(ToolsError { errors })
        }
    }
}

fn valid_tool(s: &str) -> bool {
    (1..=64).contains(&s.len())
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._-".contains(&b))
}

/// `line:col` of a byte offset, both from 1 (the column counts chars).
fn line_col(text: &str, offset: usize) -> String {
    let before = text.get(..offset.min(text.len())).unwrap_or("");
    let col = before.rsplit('\n').next().unwrap_or("").chars().count() + 1;
    format!("{}:{col}", line_of(text, offset))
}

fn line_of(text: &str, offset: usize) -> usize {
    text.get(..offset.min(text.len()))
        .map_or(0, |t| t.matches('\n').count() + 1)
}

fn read_capped(p: &Path) -> std::io::Result<String> {
    use std::io::Read;
    let mut text = String::new();
    std::fs::File::open(p)?
        .take(MAX_FILE_BYTES + 1)
        .read_to_string(&mut text)?;
    if text.len() as u64 > MAX_FILE_BYTES {
        return Err(std::io::Error::other(format!(
            "larger than {MAX_FILE_BYTES} bytes"
        )));
    }
    Ok(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    const SHIPPED: &str = include_str!("../../rules/tools.toml");

    fn one(text: &str) -> Result<ToolTable, ToolsError> {
        ToolTable::from_sources(&[("t.toml".into(), text.into())])
    }

    #[test]
    fn shipped_table_loads_and_names_the_admin_tools() {
        let t = one(SHIPPED).unwrap();
        assert_eq!(
            t.tool_for("github.com/docker/cli/cmd/docker"),
            Some("docker")
        );
        assert_eq!(t.tool_for("k8s.io/kubernetes/cmd/kubectl"), Some("kubectl"));
        assert_eq!(t.tool_for("github.com/opencontainers/runc"), Some("runc"));
        assert_eq!(
            t.tool_for("github.com/cyberark/kubeletctl"),
            Some("kubeletctl")
        );
        assert_eq!(t.tool_for("example.com/hello"), None);
    }

    #[test]
    fn shipped_table_is_an_empty_rule_file_for_the_rule_loader() {
        let rs = crate::rules::RuleSet::from_sources(&[("tools.toml".into(), SHIPPED.into())]);
        assert!(rs.unwrap().is_empty());
    }

    #[test]
    fn later_files_override_and_extend() {
        let local = "[[metadata.tool]]\nname = \"mydocker\"\nmain = [\"github.com/docker/cli/cmd/docker\", \"example.com/x\"]\n";
        let t =
            ToolTable::from_sources(&[("a".into(), SHIPPED.into()), ("b".into(), local.into())])
                .unwrap();
        assert_eq!(
            t.tool_for("github.com/docker/cli/cmd/docker"),
            Some("mydocker")
        );
        assert_eq!(t.tool_for("example.com/x"), Some("mydocker"));
    }

    #[test]
    fn errors_carry_file_line_and_column() {
        let e = one("[[metadata.tool]]\nname = \"docker\"\nmian = [\"x\"]\n").unwrap_err();
        assert!(
            e.to_string()
                .starts_with("t.toml:3:1: unknown field `mian`"),
            "{e}"
        );
        let e = one("[[metadata.tool]]\nname = \"Docker!\"\nmain = [\"a b\", \"c\", \"c\"]\n")
            .unwrap_err();
        assert_eq!(e.errors.len(), 3, "{e}");
        assert!(e.errors[0].starts_with("t.toml:2:8: tool name"), "{e}");
        assert!(e.errors[2].contains("listed twice"), "{e}");
        let e = one("[tool]\n").unwrap_err();
        assert!(
            e.to_string()
                .starts_with("t.toml:1:2: unknown field `tool`"),
            "{e}"
        );
    }
}
