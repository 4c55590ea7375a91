//! Command-line interface: one module per subcommand.

use clap::{Parser, Subcommand};

mod infer;

/// fusionstream: captions, answers, embeddings and tags for streams of image and text events.
#[derive(Debug, Parser)]
#[command(name = "fusionstream", version, about)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the model on one input and print one JSON object.
    Infer(infer::InferArgs),
}

/// Dispatch a parsed command line.
pub fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Infer(args) => infer::run(args),
    }
}
