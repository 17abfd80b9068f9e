//! The `ddpm` command: see `ddpm --help`.

use clap::Parser;

fn main() -> anyhow::Result<()> {
    ddpm::cli::run(ddpm::cli::Cli::parse())
}
