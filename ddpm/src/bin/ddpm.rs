//! The `ddpm` command: see `ddpm --help`.

use clap::Parser;

fn main() -> anyhow::Result<()> {
    // Training frees and reallocates the same large buffers every step.
    tensor::cpu::keep_freed_memory();
    ddpm::cli::run(ddpm::cli::Cli::parse())
}
