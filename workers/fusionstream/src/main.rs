//! `fusionstream` — the worker binary. This file only parses the command line and hands
//! over; each subcommand lives in `cli/`.

use std::process::ExitCode;

use clap::Parser;

mod cli;

/// The worker's allocator: jemalloc. With glibc's malloc (an arena per thread that allocates
/// under contention, up to 8 per core, each keeping what was freed in it) the same flood at
/// the limits peaked anywhere between 205 and 320 MiB, over the bound `fusionstream_engine::memory`
/// derives in one run of five; with jemalloc 204-212 MiB over four runs (`tests/memory.rs`;
/// benches/README.md "Memory"). mimalloc was tried too: 343-373 MiB.
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

fn main() -> ExitCode {
    pin_cpu_threads();
    let args = cli::Cli::parse();
    match cli::run(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // One line: the error and its causes.
            let chain: Vec<String> = e.chain().map(ToString::to_string).collect();
            eprintln!("error: {}", chain.join(": "));
            ExitCode::FAILURE
        }
    }
}

/// candle 0.11 sizes its CPU matmul parallelism with `num_cpus::get_physical()` on every
/// matmul unless `RAYON_NUM_THREADS` is set, and that reads `/proc/cpuinfo` each time (~12%
/// of the end-to-end time of `fusionstream run` on a 2-core machine, found with perf). Set it
/// once, before any thread starts, to the cores this process may use.
fn pin_cpu_threads() {
    if std::env::var_os("RAYON_NUM_THREADS").is_none() {
        let n = std::thread::available_parallelism().map_or(1, |n| n.get());
        std::env::set_var("RAYON_NUM_THREADS", n.to_string());
    }
}
