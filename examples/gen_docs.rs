//! Generates the man pages and shell completions that the packages ship,
//! from the same clap definition the binary parses (`execsentry::cli::Cli`),
//! so they cannot drift from the real options.
//!
//! Usage: `cargo run --example gen_docs -- OUTDIR`; writes
//! `OUTDIR/man/execsentry.1` (plus one page per subcommand, e.g.
//! `execsentry-config-check.1`) and `OUTDIR/completions/{execsentry.bash,
//! _execsentry, execsentry.fish}`. `make deb`/`make rpm` run it.

use std::fs;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use clap::CommandFactory;
use clap_complete::Shell;
use execsentry::cli::Cli;

fn main() -> Result<()> {
    let out = PathBuf::from(
        std::env::args_os()
            .nth(1)
            .context("usage: gen_docs OUTDIR")?,
    );
    let man_dir = out.join("man");
    let comp_dir = out.join("completions");
    fs::create_dir_all(&man_dir)?;
    fs::create_dir_all(&comp_dir)?;

    // The binary's --version carries the commit and features; the man page
    // header wants just the release, as every other page in man(1) shows.
    let cmd = Cli::command().version(env!("CARGO_PKG_VERSION"));
    write_man(&cmd, &man_dir)?;

    for shell in [Shell::Bash, Shell::Zsh, Shell::Fish] {
        let mut cmd = cmd.clone();
        let path = clap_complete::generate_to(shell, &mut cmd, "execsentry", &comp_dir)
            .with_context(|| format!("writing {shell} completions"))?;
        println!("{}", path.display());
    }
    Ok(())
}

/// One page for the command and one per subcommand (`execsentry-rules-check.1`),
/// like git: the top page's SUBCOMMANDS section points to them.
fn write_man(cmd: &clap::Command, dir: &Path) -> Result<()> {
    clap_mangen::generate_to(cmd.clone(), dir).context("writing man pages")?;
    for entry in fs::read_dir(dir)? {
        println!("{}", entry?.path().display());
    }
    Ok(())
}
