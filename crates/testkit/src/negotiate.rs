//! Which media type a resource response is written in, from the request's `Accept`, as
//! kube-apiserver's output negotiation picks it among what it can write for the kind.

pub(crate) use crate::protobuf::PROTOBUF;
use crate::status::Status;
use crate::table::IncludeObject;

/// The protobuf media type of a watch stream (length-delimited `WatchEvent`s).
pub(crate) const PROTOBUF_WATCH: &str = "application/vnd.kubernetes.protobuf;stream=watch";

/// What a resource response is written as.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Output {
    /// JSON (also what a missing or unrecognised `Accept` gets).
    Json,
    /// A `meta.k8s.io/v1` Table in JSON.
    Table(IncludeObject),
    /// Kubernetes protobuf.
    Protobuf,
}

/// The first `Accept` range this server can answer, in the order kube-apiserver tries them
/// (goautoneg's: q, then concrete types before wildcards, then as sent): `application/json`
/// (or `*/*`, `application/*`), a v1 JSON Table, or protobuf when the
/// kind has a protobuf encoding (`protobuf`; custom resources never do). Clauses this
/// server does not write (YAML, v1beta1 Tables, protobuf Tables) are skipped. When none
/// matches and the client named protobuf, the answer is kube's 406; any other unmatched
/// `Accept` gets JSON.
pub(crate) fn output(
    accept: Option<&str>,
    include: IncludeObject,
    protobuf: bool,
    custom_resource: bool,
) -> Result<Output, Status> {
    let Some(accept) = accept.filter(|a| !a.trim().is_empty()) else {
        return Ok(Output::Json);
    };
    let mut asked_protobuf = false;
    for range in kubegate_routing::accept::parse_accept(accept) {
        let typed = (range.param("as"), range.param("g"), range.param("v"));
        if range.matches("application", "json") {
            match typed {
                (None, None, None) => return Ok(Output::Json),
                (Some("Table"), Some("meta.k8s.io"), Some("v1")) => {
                    return Ok(Output::Table(include));
                }
                _ => {}
            }
        } else if range.type_ == "application" && range.subtype == "vnd.kubernetes.protobuf" {
            asked_protobuf = true;
            if protobuf && !range.asks_for_conversion() {
                return Ok(Output::Protobuf);
            }
        }
    }
    if !asked_protobuf {
        return Ok(Output::Json);
    }
    Err(Status::not_acceptable(if custom_resource {
        "only the following media types are accepted: application/json, application/yaml"
    } else {
        "only the following media types are accepted: application/json, application/yaml, application/vnd.kubernetes.protobuf"
    }))
}

/// Whether a Status answering this request is written in protobuf, as kube-apiserver's
/// `ErrorNegotiated` decides for every built-in endpoint.
pub(crate) fn status_in_protobuf(accept: Option<&str>) -> bool {
    accept.is_some_and(kubegate_routing::accept::negotiates_protobuf)
}

#[cfg(test)]
mod tests {
    use super::*;

    const KUBECTL_TABLE: &str = "application/json;as=Table;v=v1;g=meta.k8s.io,application/json;as=Table;v=v1beta1;g=meta.k8s.io,application/json";
    /// client-go with `ContentType: application/vnd.kubernetes.protobuf` (controllers).
    const CLIENT_GO_PROTOBUF: &str = "application/vnd.kubernetes.protobuf, */*";

    /// (case, Accept, the kind has a protobuf encoding, output or error code)
    type Case = (
        &'static str,
        Option<&'static str>,
        bool,
        Result<Output, u16>,
    );

    #[test]
    fn picks_the_first_clause_it_can_write() {
        let m = IncludeObject::Metadata;
        let cases: [Case; 12] = [
            ("no Accept", None, true, Ok(Output::Json)),
            (
                "kubectl get",
                Some(KUBECTL_TABLE),
                true,
                Ok(Output::Table(m)),
            ),
            (
                "plain JSON",
                Some("application/json"),
                true,
                Ok(Output::Json),
            ),
            (
                "v1beta1 Table only falls back to JSON",
                Some("application/json;as=Table;v=v1beta1;g=meta.k8s.io,application/json"),
                true,
                Ok(Output::Json),
            ),
            (
                "client-go protobuf",
                Some(CLIENT_GO_PROTOBUF),
                true,
                Ok(Output::Protobuf),
            ),
            (
                "client-go protobuf, kind without protobuf",
                Some(CLIENT_GO_PROTOBUF),
                false,
                Ok(Output::Json),
            ),
            (
                "JSON first wins",
                Some("application/json, application/vnd.kubernetes.protobuf"),
                true,
                Ok(Output::Json),
            ),
            ("protobuf only", Some(PROTOBUF), true, Ok(Output::Protobuf)),
            (
                "a concrete type before */*, as goautoneg sorts",
                Some("*/*, application/vnd.kubernetes.protobuf"),
                true,
                Ok(Output::Protobuf),
            ),
            (
                "protobuf only, no encoding",
                Some(PROTOBUF),
                false,
                Err(406),
            ),
            (
                "protobuf Table is not written",
                Some("application/vnd.kubernetes.protobuf;as=Table;v=v1;g=meta.k8s.io"),
                true,
                Err(406),
            ),
            ("unknown type", Some("text/html"), true, Ok(Output::Json)),
        ];
        for (name, accept, protobuf, want) in cases {
            let got = output(accept, m, protobuf, false).map_err(|s| s.code);
            assert_eq!(got, want, "{name}");
        }
    }

    #[test]
    fn statuses_follow_the_first_range_a_status_can_meet() {
        let kubectl = "application/json;as=Table;v=v1;g=meta.k8s.io,application/json";
        assert!(!status_in_protobuf(None));
        assert!(!status_in_protobuf(Some(kubectl)));
        assert!(status_in_protobuf(Some(CLIENT_GO_PROTOBUF)));
        assert!(status_in_protobuf(Some(
            "application/json;as=Table;v=v1;g=meta.k8s.io, application/vnd.kubernetes.protobuf"
        )));
        assert!(!status_in_protobuf(Some(
            "application/json, application/vnd.kubernetes.protobuf"
        )));
    }

    #[test]
    fn custom_resources_name_no_protobuf_in_the_406() {
        let s = output(Some(PROTOBUF), IncludeObject::Metadata, false, true).unwrap_err();
        assert_eq!(s.reason, "NotAcceptable");
        assert_eq!(
            s.message,
            "only the following media types are accepted: application/json, application/yaml"
        );
    }
}
