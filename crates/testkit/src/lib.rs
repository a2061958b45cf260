#![doc = include_str!("../README.md")]

mod api;
mod authn;
mod authz;
mod body;
mod certs;
mod conn;
mod discovery;
mod exec;
mod faults;
mod identity;
mod kubeconfig;
mod meta;
mod negotiate;
mod openapi;
mod patch;
mod pipeline;
mod protobuf;
mod protobuf_encode;
mod rbac;
mod recorder;
mod request;
mod resources;
mod selector;
mod server;
mod spdy;
mod status;
mod store;
mod table;
mod tls;
mod watch;

use std::path::PathBuf;

pub use api::pod_log_lines;
pub use authz::{Attributes, Authorizer, Decision, FnAuthorizer};
pub use body::Body;
pub use certs::CertifiedKey;
pub use exec::EXEC_STDOUT_PREFIX;
pub use faults::{BodyGate, Fault, FaultRule, Faults};
pub use identity::{
    SYSTEM_ANONYMOUS, SYSTEM_AUTHENTICATED, SYSTEM_MASTERS, SYSTEM_UNAUTHENTICATED, UserInfo,
};
pub use kubeconfig::{Credential, write_kubeconfig};
pub use protobuf::{decode_protobuf, decode_protobuf_watch_event};
pub use rbac::{Rbac, RbacAuthorizer};
pub use recorder::{RecordedRequest, Recorder};
pub use server::{TestApiServer, TestApiServerConfig, UPGRADE_ECHO_PATH};
pub use status::{Status, StatusCause, StatusDetails};

/// Errors from starting or driving the test server.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Certificate generation failed.
    #[error("certificate generation failed: {0}")]
    Certificate(#[from] rcgen::Error),
    /// TLS configuration failed.
    #[error("TLS configuration failed: {0}")]
    Tls(String),
    /// A file or socket operation failed.
    #[error("I/O error on {path}: {source}")]
    Io {
        /// The file or address.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// JSON (de)serialisation failed.
    #[error("JSON error: {0}")]
    Json(#[from] serde_json::Error),
    /// The resource name is not one this server serves.
    #[error("unknown resource {0:?}")]
    UnknownResource(String),
    /// RBAC objects could not be compiled.
    #[error("invalid RBAC policy: {0}")]
    Rbac(String),
    /// The store refused the operation (the Status kube would answer with).
    #[error("{}", .0.message)]
    Api(Status),
}

impl From<Status> for Error {
    fn from(s: Status) -> Self {
        Self::Api(s)
    }
}

impl From<rustls::Error> for Error {
    fn from(e: rustls::Error) -> Self {
        Self::Tls(e.to_string())
    }
}
