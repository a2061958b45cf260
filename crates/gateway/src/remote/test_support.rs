//! What the remote tests serve issuers and centrals with.

use super::client::HttpsClient;

/// A TLS listener on 127.0.0.1 with a throwaway self-signed certificate, its `https://` URL, the
/// acceptor for its connections, and a client that trusts it.
pub(crate) async fn tls_listener() -> (
    tokio::net::TcpListener,
    String,
    tokio_rustls::TlsAcceptor,
    HttpsClient,
) {
    let dir = std::env::temp_dir().join(format!("kubegate-remote-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&dir).unwrap();
    let generated = rcgen::generate_simple_self_signed(vec!["127.0.0.1".into()]).unwrap();
    let (cert_file, key_file) = (dir.join("tls.crt"), dir.join("tls.key"));
    std::fs::write(&cert_file, generated.cert.pem()).unwrap();
    std::fs::write(&key_file, generated.signing_key.serialize_pem()).unwrap();
    let tls = crate::tls::server_config(&crate::tls::ServingCert {
        cert_file: cert_file.clone(),
        key_file,
        self_signed: true,
    })
    .unwrap();
    let client = HttpsClient::new(Some(&cert_file), "test").unwrap();
    let _ = std::fs::remove_dir_all(&dir);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("https://{}", listener.local_addr().unwrap());
    (listener, url, tokio_rustls::TlsAcceptor::from(tls), client)
}

/// A client that trusts a throwaway CA no server uses: for centrals that never answer.
pub(crate) fn client_trusting_nothing() -> HttpsClient {
    let ca = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
    let ca_file =
        std::env::temp_dir().join(format!("kubegate-remote-{}.crt", uuid::Uuid::new_v4()));
    std::fs::write(&ca_file, ca.cert.pem()).unwrap();
    let client = HttpsClient::new(Some(&ca_file), "test").unwrap();
    let _ = std::fs::remove_file(&ca_file);
    client
}
