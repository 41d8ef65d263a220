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
    /// Writes the built-in synthetic set as a folder dataset: OUT/real, OUT/fake/FAMILY (1 real to 5 fakes).
    Synth {
        /// Output folder.
        out: std::path::PathBuf,
        #[arg(long, default_value_t = 200)]
        n_real: usize,
        #[arg(long, default_value_t = 1000)]
        n_fake: usize,
        /// Image side in pixels (even, 16 to 1024).
        #[arg(long, default_value_t = 64)]
        size: usize,
        #[arg(long, default_value_t = 0)]
        seed: u64,
        /// Fake families, comma-separated: upconv, nearest, fingerprint.
        #[arg(long, value_delimiter = ',', default_value = "upconv,nearest,fingerprint")]
        families: Vec<String>,
    },
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
        Command::Synth { out, n_real, n_fake, size, seed, families } => {
            let cfg = dfgpu::data::synth::SynthConfig { n_real, n_fake, size, seed, families };
            let t = std::time::Instant::now();
            dfgpu::data::synth::write(&cfg, &out).map(|n| {
                println!(
                    "wrote {n} images ({n_real} real, {n_fake} fake, {size}x{size}) to {} in {:.1} s",
                    out.display(),
                    t.elapsed().as_secs_f64()
                )
            })
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("dfgpu: {e}");
            ExitCode::FAILURE
        }
    }
}
