//! The dfgpu command line: parse, then call the library.

use clap::{Parser, Subcommand};
use std::process::ExitCode;

#[derive(Parser)]
#[command(name = "dfgpu", version, about = "Train and run two-branch (EfficientNet + FFT) deepfake image detectors")]
struct Cli {
    /// Where to run: auto (the GPU if one is usable, else the CPU), cpu, cuda, or cuda:N.
    #[arg(long, global = true, default_value = "auto")]
    device: String,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Devices, driver and library versions, compiled-in GPU architectures, CPU threads.
    /// With --device, also opens that device and says what it got.
    Info {
        /// Also print ptxas's report for every kernel: registers, shared memory, spills.
        #[arg(long)]
        ptxas: bool,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = cli.device.parse::<dfgpu::DeviceSpec>().and_then(|device| match cli.command {
        Command::Info { ptxas } => dfgpu::info::run(device, ptxas),
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("dfgpu: {e}");
            ExitCode::FAILURE
        }
    }
}
