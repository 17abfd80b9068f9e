//! The `ddpm` command: see `ddpm --help`.

use clap::Parser;

fn main() -> std::process::ExitCode {
    // Training frees and reallocates the same large buffers every step.
    tensor::cpu::keep_freed_memory();
    match ddpm::cli::run(ddpm::cli::Cli::parse()) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("{}", ddpm::cli::error_report(&err));
            std::process::ExitCode::FAILURE
        }
    }
}
