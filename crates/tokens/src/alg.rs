//! JWS algorithms this crate signs or verifies with (RFC 7518 names).

use std::fmt;

use aws_lc_rs::signature::{self, VerificationAlgorithm};

/// A JWS signature algorithm.
///
/// kubegate signs with [`Algorithm::Es256`] (default), [`Algorithm::Rs256`] or
/// [`Algorithm::EdDsa`] (Ed25519). The other variants exist only to verify tokens of external
/// OIDC issuers. Symmetric (`HS*`) algorithms and `none` are deliberately not representable:
/// a verifier cannot be configured into accepting them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Algorithm {
    /// ECDSA with P-256 and SHA-256 (`ES256`).
    Es256,
    /// ECDSA with P-384 and SHA-384 (`ES384`).
    Es384,
    /// RSASSA-PKCS1-v1_5 with SHA-256 (`RS256`).
    Rs256,
    /// RSASSA-PKCS1-v1_5 with SHA-384 (`RS384`).
    Rs384,
    /// RSASSA-PKCS1-v1_5 with SHA-512 (`RS512`).
    Rs512,
    /// RSASSA-PSS with SHA-256 (`PS256`).
    Ps256,
    /// RSASSA-PSS with SHA-384 (`PS384`).
    Ps384,
    /// RSASSA-PSS with SHA-512 (`PS512`).
    Ps512,
    /// EdDSA with Ed25519 (`EdDSA`).
    EdDsa,
}

/// What the verifier makes of a header's `alg` value before looking at any key.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum HeaderAlg {
    Known(Algorithm),
    None,
    Symmetric,
    Unknown,
}

impl Algorithm {
    /// Every algorithm, in a stable order.
    pub const ALL: [Algorithm; 9] = [
        Algorithm::Es256,
        Algorithm::Es384,
        Algorithm::Rs256,
        Algorithm::Rs384,
        Algorithm::Rs512,
        Algorithm::Ps256,
        Algorithm::Ps384,
        Algorithm::Ps512,
        Algorithm::EdDsa,
    ];

    /// The RFC 7518 `alg` name.
    pub const fn name(self) -> &'static str {
        match self {
            Algorithm::Es256 => "ES256",
            Algorithm::Es384 => "ES384",
            Algorithm::Rs256 => "RS256",
            Algorithm::Rs384 => "RS384",
            Algorithm::Rs512 => "RS512",
            Algorithm::Ps256 => "PS256",
            Algorithm::Ps384 => "PS384",
            Algorithm::Ps512 => "PS512",
            Algorithm::EdDsa => "EdDSA",
        }
    }

    /// Parses an exact RFC 7518 `alg` name (case-sensitive, as JWS requires).
    pub fn from_name(name: &str) -> Option<Algorithm> {
        Algorithm::ALL.into_iter().find(|a| a.name() == name)
    }

    /// Whether a [`crate::SigningKey`] can be made for this algorithm.
    pub const fn can_sign(self) -> bool {
        matches!(self, Algorithm::Es256 | Algorithm::Rs256 | Algorithm::EdDsa)
    }

    /// Whether this is one of the RSA algorithms.
    pub const fn is_rsa(self) -> bool {
        matches!(
            self,
            Algorithm::Rs256
                | Algorithm::Rs384
                | Algorithm::Rs512
                | Algorithm::Ps256
                | Algorithm::Ps384
                | Algorithm::Ps512
        )
    }

    pub(crate) fn verification(self) -> &'static dyn VerificationAlgorithm {
        match self {
            Algorithm::Es256 => &signature::ECDSA_P256_SHA256_FIXED,
            Algorithm::Es384 => &signature::ECDSA_P384_SHA384_FIXED,
            Algorithm::Rs256 => &signature::RSA_PKCS1_2048_8192_SHA256,
            Algorithm::Rs384 => &signature::RSA_PKCS1_2048_8192_SHA384,
            Algorithm::Rs512 => &signature::RSA_PKCS1_2048_8192_SHA512,
            Algorithm::Ps256 => &signature::RSA_PSS_2048_8192_SHA256,
            Algorithm::Ps384 => &signature::RSA_PSS_2048_8192_SHA384,
            Algorithm::Ps512 => &signature::RSA_PSS_2048_8192_SHA512,
            Algorithm::EdDsa => &signature::ED25519,
        }
    }

    pub(crate) fn rsa_params(self) -> Option<&'static signature::RsaParameters> {
        Some(match self {
            Algorithm::Rs256 => &signature::RSA_PKCS1_2048_8192_SHA256,
            Algorithm::Rs384 => &signature::RSA_PKCS1_2048_8192_SHA384,
            Algorithm::Rs512 => &signature::RSA_PKCS1_2048_8192_SHA512,
            Algorithm::Ps256 => &signature::RSA_PSS_2048_8192_SHA256,
            Algorithm::Ps384 => &signature::RSA_PSS_2048_8192_SHA384,
            Algorithm::Ps512 => &signature::RSA_PSS_2048_8192_SHA512,
            _ => return None,
        })
    }
}

impl fmt::Display for Algorithm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl HeaderAlg {
    /// Classifies a header `alg`. `none` and `HS*` are matched case-insensitively so that
    /// spellings such as `nOnE` land in the precise error rather than "unknown".
    pub(crate) fn classify(alg: &str) -> HeaderAlg {
        if let Some(a) = Algorithm::from_name(alg) {
            return HeaderAlg::Known(a);
        }
        if alg.eq_ignore_ascii_case("none") {
            return HeaderAlg::None;
        }
        if alg.len() >= 2 && alg.as_bytes()[..2].eq_ignore_ascii_case(b"HS") {
            return HeaderAlg::Symmetric;
        }
        HeaderAlg::Unknown
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for a in Algorithm::ALL {
            assert_eq!(Algorithm::from_name(a.name()), Some(a));
        }
        assert_eq!(Algorithm::from_name("es256"), None);
    }

    #[test]
    fn classify_hostile_names() {
        assert_eq!(HeaderAlg::classify("none"), HeaderAlg::None);
        assert_eq!(HeaderAlg::classify("NoNe"), HeaderAlg::None);
        assert_eq!(HeaderAlg::classify("HS256"), HeaderAlg::Symmetric);
        assert_eq!(HeaderAlg::classify("hs512"), HeaderAlg::Symmetric);
        assert_eq!(HeaderAlg::classify("ES512"), HeaderAlg::Unknown);
        assert_eq!(HeaderAlg::classify(""), HeaderAlg::Unknown);
        assert_eq!(
            HeaderAlg::classify("ES256"),
            HeaderAlg::Known(Algorithm::Es256)
        );
    }
}
