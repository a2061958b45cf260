//! The workspace's `examples/cli.rs`, built as part of this crate so its end-to-end tests can run
//! the real CLI (as kubectl's exec credential plugin, too) with `cargo test -p kubegate-client`.

#[path = "../../../examples/cli.rs"]
mod cli;

fn main() -> std::process::ExitCode {
    cli::main()
}
