//! Runs a fake kube-apiserver until Ctrl-C and prints where its admin kubeconfig is:
//! `cargo run -p kubegate-testkit --example serve`, then `kubectl --kubeconfig <path> get ns`.
#![allow(clippy::print_stdout)]

use kubegate_testkit::{Rbac, TestApiServer, TestApiServerConfig};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let server = TestApiServer::start(TestApiServerConfig::with_rbac(&Rbac::default())?).await?;
    println!("url: {}", server.url());
    println!("kubeconfig: {}", server.kubeconfig_path().display());
    tokio::signal::ctrl_c().await?;
    Ok(())
}
