//! Command-line interface: one module per subcommand.

use clap::{Parser, Subcommand};

mod index;
mod infer;
mod run;

/// fusionstream: captions, answers, embeddings and tags for streams of image and text events.
#[derive(Debug, Parser)]
#[command(name = "fusionstream", version, about)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the worker (with no configuration: the embedded default on local files).
    Run(run::RunArgs),
    /// Run the pipeline over every object under an S3 prefix (resumable, shardable).
    Backfill(run::BackfillArgs),
    /// Print the effective configuration (defaults, files, environment; secrets masked).
    Config(run::ConfigArgs),
    /// Run the model on one input and print one JSON object.
    Infer(infer::InferArgs),
    /// Keep a live vector index of the embeddings the workers write (serves /search).
    Index(index::IndexArgs),
    /// Search the index by text or image with the bundle's CLIP; prints JSON.
    Search(index::SearchArgs),
}

/// Dispatch a parsed command line.
pub fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Run(args) => run::run(args),
        Command::Backfill(args) => run::backfill_run(args),
        Command::Config(args) => run::print_config(args),
        Command::Infer(args) => infer::run(args),
        Command::Index(args) => index::run_index(args),
        Command::Search(args) => index::run_search(args),
    }
}
