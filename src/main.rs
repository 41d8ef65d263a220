//! The dfgpu command line: parse, then call the library.

use clap::{Parser, Subcommand};
use std::process::ExitCode;

#[derive(Parser)]
#[command(name = "dfgpu", version, about = "Train and run two-branch (EfficientNet + FFT) deepfake image detectors")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Devices, driver and library versions, compiled-in GPU architectures, CPU threads.
    Info {
        /// Also print ptxas's report for every kernel: registers, shared memory, spills.
        #[arg(long)]
        ptxas: bool,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result: dfgpu::Result<()> = match cli.command {
        Command::Info { ptxas } => {
            print!("{}", dfgpu::info::report());
            if ptxas {
                print!("ptxas report:\n{}", dfgpu::backend::cuda::kernels::PTXAS_REPORT);
            }
            Ok(())
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("dfgpu: {e}");
            ExitCode::FAILURE
        }
    }
}
