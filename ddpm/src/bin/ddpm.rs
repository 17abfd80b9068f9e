//! The `ddpm` command: see `ddpm --help`.

use clap::Parser;

// Large buffers on 2 MiB pages (see `tensor::cpu::HugePageHeap`).
#[global_allocator]
static HEAP: tensor::cpu::HugePageHeap = tensor::cpu::HugePageHeap;

fn main() -> std::process::ExitCode {
    // Training frees and reallocates the same large buffers every step.
    tensor::cpu::keep_freed_memory();
    let cli = ddpm::cli::Cli::parse();
    // The kernels start on the command's own thread, with no hand-off to the pool.
    match tensor::cpu::run_on_pool(|| ddpm::cli::run(cli)) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("{}", ddpm::cli::error_report(&err));
            std::process::ExitCode::FAILURE
        }
    }
}
