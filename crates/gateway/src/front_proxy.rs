//! A trusted authenticating proxy in front of the gateway: `X-Remote-User` / `X-Remote-Group`
//! (or the configured header names) are believed only from a known proxy, as kube-apiserver's
//! request-header authenticator believes them only from its client CA: the connection must
//! come from a configured source network and/or present a client certificate issued by the
//! configured CA (with an allowed common name) — every configured check must pass.

use std::net::IpAddr;
use std::sync::Arc;

use futures_util::future::BoxFuture;
use kubegate_authz::{CompiledScope, Identity};

use crate::authenticators::{AuthnInput, AuthnOutcome, ExternalAuthenticator};
use crate::authn::{Caller, CallerCredential};
use crate::config::FrontProxyConfig;

/// An IP network in CIDR notation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    network: IpAddr,
    prefix: u8,
}

impl Cidr {
    /// Parses `10.0.0.0/8`, `::1/128`, or a bare address (a single host).
    pub fn parse(s: &str) -> Result<Cidr, String> {
        let (addr, prefix) = match s.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (s, None),
        };
        let network: IpAddr = addr
            .trim()
            .parse()
            .map_err(|_| format!("{s:?} is not an IP network"))?;
        let max = if network.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            Some(p) => p
                .trim()
                .parse::<u8>()
                .ok()
                .filter(|p| *p <= max)
                .ok_or_else(|| format!("{s:?} has an invalid prefix length"))?,
            None => max,
        };
        Ok(Cidr { network, prefix })
    }

    /// Whether `ip` is inside the network (IPv4-mapped IPv6 addresses count as IPv4).
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
            v4 => v4,
        };
        match (self.network, ip) {
            (IpAddr::V4(n), IpAddr::V4(a)) => {
                let mask = u32::MAX
                    .checked_shl(32 - u32::from(self.prefix))
                    .unwrap_or(0);
                u32::from(n) & mask == u32::from(a) & mask
            }
            (IpAddr::V6(n), IpAddr::V6(a)) => {
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(self.prefix))
                    .unwrap_or(0);
                u128::from(n) & mask == u128::from(a) & mask
            }
            _ => false,
        }
    }
}

/// The front-proxy authenticator.
pub struct FrontProxy {
    trusted: Vec<Cidr>,
    /// The client CA a connection's certificate must chain to, checked again on its requests
    /// (a reload may have replaced the CA the handshake checked); `None`: no certificate is
    /// required.
    client_ca: Option<Arc<dyn rustls::server::danger::ClientCertVerifier>>,
    allowed_names: Vec<String>,
    user_headers: Vec<String>,
    group_headers: Vec<String>,
}

impl std::fmt::Debug for FrontProxy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FrontProxy")
            .field("trusted", &self.trusted)
            .field("client_ca", &self.client_ca.is_some())
            .field("allowed_names", &self.allowed_names)
            .field("user_headers", &self.user_headers)
            .field("group_headers", &self.group_headers)
            .finish()
    }
}

impl FrontProxy {
    /// Builds the authenticator, reading the client CA file; errors name the field
    /// (`trustedCidrs: …`, `clientCaFile: …`).
    pub fn new(config: &FrontProxyConfig) -> Result<FrontProxy, String> {
        let trusted = config
            .trusted_cidrs
            .iter()
            .map(|c| Cidr::parse(c))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| format!("trustedCidrs: {e}"))?;
        let lower = |v: &[String], default: &str| {
            if v.is_empty() {
                vec![default.to_owned()]
            } else {
                v.iter().map(|h| h.to_ascii_lowercase()).collect()
            }
        };
        let client_ca = config
            .client_ca_file
            .as_deref()
            .map(crate::tls::client_verifier)
            .transpose()
            .map_err(|e| format!("clientCaFile: {e}"))?;
        Ok(FrontProxy {
            trusted,
            client_ca,
            allowed_names: config.allowed_names.clone(),
            user_headers: lower(&config.username_headers, "x-remote-user"),
            group_headers: lower(&config.group_headers, "x-remote-group"),
        })
    }
}

impl FrontProxy {
    fn trusts(&self, input: &AuthnInput<'_>) -> bool {
        let network_ok = self.trusted.is_empty()
            || input
                .client_addr
                .is_some_and(|a| self.trusted.iter().any(|c| c.contains(a.ip())));
        let certificate_ok = self.client_ca.as_ref().is_none_or(|ca| {
            input.peer_certificate.is_some_and(|cert| {
                (self.allowed_names.is_empty()
                    || common_name(cert.leaf()).is_some_and(|cn| self.allowed_names.contains(&cn)))
                    && cert.verified_by(ca)
            })
        });
        network_ok && certificate_ok
    }
}

/// The subject common name of a DER certificate.
fn common_name(der: &[u8]) -> Option<String> {
    let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
    let cn = cert.subject().iter_common_name().next()?;
    cn.as_str().ok().map(str::to_owned)
}

impl ExternalAuthenticator for FrontProxy {
    fn authenticate<'a>(&'a self, input: AuthnInput<'a>) -> BoxFuture<'a, AuthnOutcome> {
        Box::pin(async move {
            if !self.trusts(&input) {
                // Identity headers from anywhere else are ignored (and stripped before any
                // upstream sees them).
                return AuthnOutcome::Skip;
            }
            let Some(user) = self
                .user_headers
                .iter()
                .find_map(|h| input.headers.get(h.as_str()))
                .and_then(|v| v.to_str().ok())
                .filter(|v| !v.is_empty())
            else {
                return AuthnOutcome::Skip;
            };
            let groups: Vec<String> = self
                .group_headers
                .iter()
                .flat_map(|h| input.headers.get_all(h.as_str()))
                .filter_map(|v| v.to_str().ok())
                .map(str::to_owned)
                .collect();
            AuthnOutcome::Authenticated(Box::new(Caller {
                identity: Identity::authenticated(user, "", groups, Default::default()),
                scope: Arc::new(CompiledScope::unrestricted()),
                raw_scope: None,
                credential: CallerCredential::FrontProxy,
            }))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cidrs() {
        let c = Cidr::parse("10.1.0.0/16").unwrap();
        assert!(c.contains("10.1.2.3".parse().unwrap()));
        assert!(!c.contains("10.2.0.1".parse().unwrap()));
        assert!(c.contains("::ffff:10.1.0.9".parse().unwrap()));
        let host = Cidr::parse("127.0.0.1").unwrap();
        assert!(host.contains("127.0.0.1".parse().unwrap()));
        assert!(!host.contains("127.0.0.2".parse().unwrap()));
        assert!(
            Cidr::parse("0.0.0.0/0")
                .unwrap()
                .contains("8.8.8.8".parse().unwrap())
        );
        assert!(
            Cidr::parse("::/0")
                .unwrap()
                .contains("::1".parse().unwrap())
        );
        assert!(Cidr::parse("10.0.0.0/33").is_err());
        assert!(Cidr::parse("nope").is_err());
    }
}
