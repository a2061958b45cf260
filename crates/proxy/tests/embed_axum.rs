//! Runs `examples/embed_axum.rs`, which checks every answer it gets: the layers protecting an
//! axum router, authorized by kubegate-authz RBAC, in front of a testkit kube-apiserver.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

#[allow(dead_code)]
#[path = "../examples/embed_axum.rs"]
mod embed_axum;

#[tokio::test(flavor = "multi_thread")]
async fn the_axum_example_answers_as_the_layers_must() {
    embed_axum::demo(false).await;
}
