//! Executable identity (issue 11): a Go program built offline whose main
//! package is `github.com/docker/cli/cmd/docker` is identified as `docker`
//! from its content, whatever its file name; the real Docker CLI too; and,
//! through the running sensor, a renamed copy on the host (`/tmp/gdocker`)
//! and a hidden one in a container (`/tmp/.x`) raise
//! `t1609-renamed-container-tool` while an unrenamed copy does not.
//!
//! The parser tests need `go` (golang-go) and no root; the live test needs
//! root and Docker. Each skips loudly when its needs are not met.

mod common;

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::Duration;

use common::{
    DockerContainer, TEST_IMAGE, docker_available, json_path, json_str, output_of_fresh, rules_dir,
    run_ok, unique_name,
};
use execsentry::event::ExeIdentity;
use execsentry::identity::{FileAt, ToolTable, identify};
use serde_json::Value;

const WAIT: Duration = Duration::from_secs(15);
const MAIN: &str = "github.com/docker/cli/cmd/docker";

/// The Go program: prints and lingers a second so the sensor finds its
/// `/proc/<pid>/exe` (identity is read from the running process).
const PROGRAM: &str = r#"package main

import (
	"fmt"
	"os"
	"time"
)

func main() {
	fmt.Println("not really docker", os.Args[1:])
	time.Sleep(time.Second)
}
"#;

/// Built once per test binary into a directory kept until exit: the
/// plain binary and one linked with `-s -w` (no symbol or DWARF tables).
struct GoBuild {
    _dir: tempfile::TempDir,
    plain: PathBuf,
    stripped: PathBuf,
}

fn go_build() -> Option<&'static GoBuild> {
    static BUILT: OnceLock<Option<GoBuild>> = OnceLock::new();
    BUILT
        .get_or_init(|| {
            if !common::require_tool("go", "version") {
                return None;
            }
            let dir = tempfile::Builder::new()
                .prefix("execsentry-go.")
                .tempdir()
                .expect("temp dir");
            let src = dir.path().join("src");
            std::fs::create_dir_all(src.join("cmd/docker")).unwrap();
            std::fs::write(
                src.join("go.mod"),
                "module github.com/docker/cli\n\ngo 1.19\n",
            )
            .unwrap();
            std::fs::write(src.join("cmd/docker/main.go"), PROGRAM).unwrap();
            let build = |out: &Path, ldflags: &str| {
                run_ok(
                    Command::new("go")
                        .args(["build", "-trimpath", "-ldflags", ldflags, "-o"])
                        .arg(out)
                        .arg("./cmd/docker")
                        .current_dir(&src)
                        // Offline, self-contained and static (the test
                        // container has no libc).
                        .env("GOFLAGS", "-mod=mod")
                        .env("GOPROXY", "off")
                        .env("GOTOOLCHAIN", "local")
                        .env("CGO_ENABLED", "0")
                        .env("GOCACHE", dir.path().join("cache"))
                        .env("GOPATH", dir.path().join("gopath"))
                        .env("HOME", dir.path()),
                );
            };
            let plain = dir.path().join("docker");
            let stripped = dir.path().join("docker-stripped");
            build(&plain, "");
            build(&stripped, "-s -w");
            Some(GoBuild {
                _dir: dir,
                plain,
                stripped,
            })
        })
        .as_ref()
}

fn shipped_tools() -> ToolTable {
    ToolTable::load(&[rules_dir().join("tools.toml")]).expect("rules/tools.toml loads")
}

fn identify_path(p: &Path) -> Option<ExeIdentity> {
    let f = File::open(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
    let len = f.metadata().unwrap().len();
    identify(&FileAt { file: &f, len }, &shipped_tools())
        .unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

#[test]
fn go_program_with_dockers_main_package_is_docker() {
    let Some(b) = go_build() else { return };
    for p in [&b.plain, &b.stripped] {
        let id = identify_path(p).expect("a Go binary");
        let go = id.go.as_ref().expect("go facts");
        assert_eq!(go.main, MAIN, "{}", p.display());
        assert!(go.version.starts_with("go1."), "{}", go.version);
        assert_eq!(id.tool.as_deref(), Some("docker"));
    }
}

#[test]
fn real_docker_cli_is_docker() {
    let mut found = false;
    for p in ["/usr/bin/docker", "/usr/local/bin/docker"] {
        if !Path::new(p).is_file() {
            continue;
        }
        found = true;
        let id = identify_path(Path::new(p)).expect("docker is a Go binary");
        assert_eq!(id.tool.as_deref(), Some("docker"), "{p}: {id:?}");
    }
    if !found {
        common::skip("no docker binary (docker.io, tests/support/setup.sh)");
    }
}

#[test]
fn non_go_executables_and_fixtures_never_fail_loudly() {
    for p in ["/bin/true", "/bin/sh", "/bin/busybox"] {
        if Path::new(p).is_file() {
            assert_eq!(identify_path(Path::new(p)), None, "{p}");
        }
    }
    let dir = common::repo_root().join("tests/data/identity");
    let tools = shipped_tools();
    for e in std::fs::read_dir(&dir).expect("fixtures") {
        let data = std::fs::read(e.unwrap().path()).unwrap();
        // Hostile and truncated fixtures are errors; none may panic.
        let _ = identify(&data[..], &tools);
        for n in (0..data.len()).step_by(7) {
            let _ = identify(&data[..n], &tools);
        }
    }
}

/// Removes a path on drop (the fixed /tmp/gdocker the issue names).
struct RmOnDrop(PathBuf);

impl Drop for RmOnDrop {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

fn is_renamed_alert(v: &Value) -> bool {
    json_str(v, "event.kind") == Some("alert")
        && json_str(v, "rule.id") == Some("t1609-renamed-container-tool")
}

fn has_arg(v: &Value, marker: &str) -> bool {
    json_path(v, "process.args")
        .and_then(Value::as_array)
        .is_some_and(|a| a.iter().any(|x| x.as_str() == Some(marker)))
}

#[test]
fn renamed_docker_on_the_host_and_hidden_in_a_container_alert_by_identity() {
    if !common::require_root() {
        return;
    }
    let Some(b) = go_build() else { return };
    if !docker_available() {
        eprintln!("\n*** SKIPPED: needs Docker for the container half ***\n");
        return;
    }
    let s = common::events::sensor("auto", &[]);

    let gdocker = RmOnDrop(PathBuf::from("/tmp/gdocker"));
    std::fs::copy(&b.plain, &gdocker.0).unwrap();
    let plain_dir = tempfile::tempdir().unwrap();
    let unrenamed = plain_dir.path().join("docker");
    std::fs::copy(&b.plain, &unrenamed).unwrap();

    let c = DockerContainer::run(TEST_IMAGE, &["sleep", "300"], &[]);
    assert!(c.wait_running(WAIT), "container did not start");
    let dest = format!("{}:/tmp/.x", c.id());
    run_ok(
        Command::new("docker")
            .args(["cp"])
            .arg(&gdocker.0)
            .arg(&dest),
    );

    let host_mark = unique_name("gdocker");
    let plain_mark = unique_name("plain");
    let box_mark = unique_name("boxed");
    let run = |cmd: &mut Command| {
        let out = output_of_fresh(cmd);
        assert!(out.status.success(), "{out:?}");
    };
    run(Command::new(&gdocker.0).args(["ps", &host_mark]));
    run(Command::new(&unrenamed).args(["ps", &plain_mark]));
    let out = c.exec(&["/tmp/.x", "ps", &box_mark]);
    assert!(out.status.success(), "{out:?}");

    let host = s
        .wait_for(|v| is_renamed_alert(v) && has_arg(v, &host_mark), WAIT)
        .unwrap_or_else(|| panic!("no alert for /tmp/gdocker; stderr:\n{}", s.stderr()));
    assert_eq!(json_str(&host, "execsentry.exe.tool"), Some("docker"));
    assert_eq!(json_str(&host, "execsentry.exe.go.main"), Some(MAIN));
    assert_eq!(json_str(&host, "process.name"), Some("gdocker"));
    assert_eq!(json_str(&host, "process.executable"), Some("/tmp/gdocker"));
    assert_eq!(
        json_path(&host, "event.risk_score").and_then(Value::as_f64),
        Some(73.0)
    );

    let boxed = s
        .wait_for(|v| is_renamed_alert(v) && has_arg(v, &box_mark), WAIT)
        .unwrap_or_else(|| panic!("no alert for /tmp/.x in the container"));
    assert_eq!(json_str(&boxed, "execsentry.exe.tool"), Some("docker"));
    assert_eq!(json_str(&boxed, "process.name"), Some(".x"));
    assert_eq!(json_str(&boxed, "container.id"), Some(c.id()));
    assert_eq!(
        json_path(&boxed, "event.risk_score").and_then(Value::as_f64),
        Some(99.0)
    );

    // The unrenamed copy is identified too, but is not "renamed".
    let plain = s
        .wait_for(
            |v| json_str(v, "event.kind") == Some("event") && has_arg(v, &plain_mark),
            WAIT,
        )
        .expect("event for the unrenamed copy");
    assert_eq!(json_str(&plain, "execsentry.exe.tool"), Some("docker"));
    assert_eq!(json_str(&plain, "process.name"), Some("docker"));
    let all = s.events(Duration::from_millis(500));
    assert!(
        !all.iter()
            .any(|v| is_renamed_alert(v) && has_arg(v, &plain_mark)),
        "the unrenamed copy fired the renamed rule"
    );
}
