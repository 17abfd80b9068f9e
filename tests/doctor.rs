//! `ddpm doctor` as a user runs it. On a machine without a GPU (CI) it must
//! say so and exit non-zero, never panic; on a GPU machine with the
//! libraries installed it must pass its own checks.

use std::process::Command;

#[test]
fn doctor_reports_the_cuda_setup_and_fails_without_a_gpu() {
    let out = Command::new(env!("CARGO_BIN_EXE_ddpm")).arg("doctor").output().expect("run ddpm doctor");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!stderr.contains("panicked"), "ddpm doctor panicked:\n{stderr}");
    for section in ["libraries:", "libcuda", "libnvrtc", "libcublas", "GPUs:"] {
        assert!(stdout.contains(section), "no {section:?} in:\n{stdout}");
    }
    if tensor::cuda::cuda_is_available() {
        assert!(out.status.success(), "a GPU is available but doctor failed:\n{stdout}\n{stderr}");
        assert!(stdout.contains("kernel launch") && stdout.contains("cuBLAS GEMM"), "{stdout}");
        println!("{stdout}");
    } else {
        assert!(!out.status.success(), "no usable GPU here, yet doctor succeeded:\n{stdout}");
        assert!(stdout.contains("problems:"), "{stdout}");
        assert!(stderr.contains("keep petal from using a GPU"), "{stderr}");
        eprintln!("no GPU here; doctor said:\n{stdout}");
    }
}
