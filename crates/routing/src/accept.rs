//! The `Accept` header as kube-apiserver reads it (apimachinery's copy of `goautoneg`): media
//! ranges with their parameters, in the order its output negotiation tries them.

/// One media range of an `Accept` header, e.g. `application/json;as=Table;v=v1;g=meta.k8s.io`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct MediaRange<'a> {
    /// The type (`application`, or `*`).
    pub type_: &'a str,
    /// The subtype (`json`, `vnd.kubernetes.protobuf`, or `*`).
    pub subtype: &'a str,
    /// The `q` parameter (1 when absent, 0 when it does not parse, as Go's `ParseFloat` leaves
    /// it).
    pub q: f32,
    /// The parameters after the media type, `;`-separated, as sent.
    params: &'a str,
}

impl<'a> MediaRange<'a> {
    /// The value of parameter `name` (other than `q`), trimmed of spaces.
    pub fn param(&self, name: &str) -> Option<&'a str> {
        self.params
            .split(';')
            .filter_map(param)
            .find(|(k, _)| *k == name && name != "q")
            .map(|(_, v)| v.trim_matches(' '))
    }

    /// Whether the range asks for the object converted to another kind (`as`, `g` or `v`, as
    /// a Table or PartialObjectMetadata request does). An endpoint that transforms nothing —
    /// an error Status, a watch of plain objects — cannot satisfy such a range.
    pub fn asks_for_conversion(&self) -> bool {
        ["as", "g", "v"].iter().any(|p| self.param(p).is_some())
    }

    /// Whether the range covers `type_/subtype` (`*/*`, `type/*` or the exact type).
    pub fn matches(&self, type_: &str, subtype: &str) -> bool {
        (self.type_ == "*" && self.subtype == "*")
            || (self.type_ == type_ && (self.subtype == "*" || self.subtype == subtype))
    }

    /// goautoneg's `Less`: a higher `q` first, then a concrete type before a wildcard one, then
    /// a concrete subtype before a wildcard one. Not a total order; with the insertion sort
    /// below (Go's `sort.Sort` on fewer than 12 elements) it orders an `Accept` as kube does.
    fn before(&self, other: &Self) -> bool {
        if self.q > other.q {
            return true;
        }
        if self.type_ != "*" && other.type_ == "*" {
            return true;
        }
        self.subtype != "*" && other.subtype == "*"
    }
}

/// One `key=value` parameter: the key trimmed of spaces, the value as sent (goautoneg parses
/// `q` untrimmed). `None` without exactly one `=`.
fn param(p: &str) -> Option<(&str, &str)> {
    let (k, v) = p.split_once('=')?;
    (!v.contains('=')).then_some((k.trim_matches(' '), v))
}

/// Parses an `Accept` header the way goautoneg's `ParseAccept` does and returns its ranges in
/// the order kube-apiserver's negotiation tries them. A range without a `/` is skipped unless
/// it is `*`; parameters without `=` are ignored. Allocates the returned vector.
pub fn parse_accept(header: &str) -> Vec<MediaRange<'_>> {
    let mut ranges: Vec<MediaRange<'_>> = ranges_as_sent(header).collect();
    go_order(&mut ranges);
    ranges
}

/// The ranges of `header` in the order sent.
fn ranges_as_sent(header: &str) -> impl Iterator<Item = MediaRange<'_>> {
    header.split(',').filter_map(|part| {
        let part = part.trim_matches(' ');
        let (media, params) = part.split_once(';').unwrap_or((part, ""));
        let (type_, subtype) = match media.split_once('/') {
            None if media.trim_matches(' ') == "*" => ("*", "*"),
            Some((t, s)) if !s.is_empty() && !s.contains('/') => {
                (t.trim_matches(' '), s.trim_matches(' '))
            }
            _ => return None,
        };
        let q = params
            .split(';')
            .filter_map(param)
            .rfind(|(k, _)| *k == "q")
            .map_or(1.0, |(_, v)| v.parse::<f32>().unwrap_or(0.0));
        Some(MediaRange {
            type_,
            subtype,
            q,
            params,
        })
    })
}

/// Sorts ranges as kube-apiserver's negotiation sees them.
fn go_order(ranges: &mut [MediaRange<'_>]) {
    if ranges.len() <= GO_INSERTION_SORT_MAX {
        // Insertion sort with goautoneg's `Less`, as Go's sort.Sort does for short slices:
        // stable where `before` says nothing. Quadratic, so only for these few.
        for i in 1..ranges.len() {
            let mut j = i;
            while j > 0 && ranges[j].before(&ranges[j - 1]) {
                ranges.swap(j, j - 1);
                j -= 1;
            }
        }
    } else {
        // A longer header is no client's; Go sorts it with pdqsort, whose result under a `Less`
        // that is not an order this does not copy. A stable sort by what `Less` means (q, then
        // concrete before wildcard) keeps it O(n log n), so a header of thousands of ranges
        // costs microseconds, not a quadratic sort on an unauthenticated error path.
        ranges.sort_by(|a, b| {
            b.q.total_cmp(&a.q)
                .then((a.type_ == "*").cmp(&(b.type_ == "*")))
                .then((a.subtype == "*").cmp(&(b.subtype == "*")))
        });
    }
}

/// Go's `sort.Sort` sorts slices up to this long by insertion sort.
const GO_INSERTION_SORT_MAX: usize = 12;

/// Whether kube-apiserver's negotiation, over the serializers of a built-in endpoint (JSON,
/// YAML, protobuf, in that order), lands on protobuf for a response that converts nothing — an
/// error Status, a plain object: the first range with no `as`/`g`/`v` that one of them meets.
pub fn negotiates_protobuf(header: &str) -> bool {
    // Cheap refusal for the usual headers, which never name protobuf.
    if !header.contains("protobuf") {
        return false;
    }
    // client-go's own header, `application/vnd.kubernetes.protobuf, */*`: a first range of
    // protobuf without parameters goes first unless some range's q is above 1 (nothing else
    // sorts before a concrete type of q 1), so a header with no `q` at all needs no parse.
    if let Some(rest) = header
        .trim_start_matches(' ')
        .strip_prefix("application/vnd.kubernetes.protobuf")
        && (rest.trim_start_matches(' ').is_empty()
            || rest.trim_start_matches(' ').starts_with(','))
        && !header.contains('q')
    {
        return true;
    }
    // Any other client's header is sorted on the stack: this runs for every forwarded request
    // of a protobuf client, and allocates nothing.
    let mut small = [MediaRange {
        type_: "",
        subtype: "",
        q: 0.0,
        params: "",
    }; GO_INSERTION_SORT_MAX];
    let mut n = 0;
    for range in ranges_as_sent(header) {
        let Some(slot) = small.get_mut(n) else {
            return first_plain_is_protobuf(&parse_accept(header));
        };
        *slot = range;
        n += 1;
    }
    go_order(&mut small[..n]);
    first_plain_is_protobuf(&small[..n])
}

/// Whether the first range with no conversion that JSON, YAML or protobuf meets is protobuf's.
fn first_plain_is_protobuf(ranges: &[MediaRange<'_>]) -> bool {
    for range in ranges {
        if range.asks_for_conversion() {
            continue;
        }
        if range.matches("application", "json") || range.matches("application", "yaml") {
            return false;
        }
        if range.matches("application", "vnd.kubernetes.protobuf") {
            return true;
        }
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    fn order(header: &str) -> Vec<String> {
        parse_accept(header)
            .iter()
            .map(|r| format!("{}/{}", r.type_, r.subtype))
            .collect()
    }

    #[test]
    fn ranges_are_tried_in_goautonegs_order() {
        let cases: [(&str, &[&str]); 7] = [
            ("application/json", &["application/json"]),
            (
                "application/vnd.kubernetes.protobuf, */*",
                &["application/vnd.kubernetes.protobuf", "*/*"],
            ),
            // A concrete type goes before a wildcard whatever the order sent.
            (
                "*/*, application/vnd.kubernetes.protobuf",
                &["application/vnd.kubernetes.protobuf", "*/*"],
            ),
            (
                "application/*, application/yaml",
                &["application/yaml", "application/*"],
            ),
            // Equal ranges keep the order sent.
            (
                "application/json, application/vnd.kubernetes.protobuf",
                &["application/json", "application/vnd.kubernetes.protobuf"],
            ),
            // q first.
            (
                "application/json;q=0.5, application/yaml",
                &["application/yaml", "application/json"],
            ),
            // No slash (or nothing after it): skipped unless `*`. An unparsable q is 0, and
            // goautoneg's `Less` still puts a concrete type before `*/*` of a higher q: it
            // tests the wildcard without asking whether the q was lower.
            (
                "text, application/, *, application/json;q=x",
                &["application/json", "*/*"],
            ),
        ];
        for (header, want) in cases {
            assert_eq!(order(header), want, "{header}");
        }
    }

    #[test]
    fn protobuf_when_it_is_the_first_range_a_plain_response_meets() {
        let cases = [
            ("application/json", false),
            ("application/vnd.kubernetes.protobuf, */*", true),
            ("*/*, application/vnd.kubernetes.protobuf", true),
            (
                "application/json, application/vnd.kubernetes.protobuf",
                false,
            ),
            (
                "application/yaml, application/vnd.kubernetes.protobuf",
                false,
            ),
            (
                "application/json;as=Table;v=v1;g=meta.k8s.io, application/vnd.kubernetes.protobuf",
                true,
            ),
            (
                "application/vnd.kubernetes.protobuf;as=Table;v=v1;g=meta.k8s.io, application/json",
                false,
            ),
            ("application/vnd.kubernetes.protobuf;q=0", true),
            // Go takes a q above 1 as it is; that range goes first.
            (
                "application/vnd.kubernetes.protobuf, application/json; q =2",
                false,
            ),
        ];
        for (header, want) in cases {
            assert_eq!(negotiates_protobuf(header), want, "{header}");
        }
    }

    /// A header of more than 12 ranges (anyone can send thousands with a bad token) is not
    /// insertion-sorted: it is sorted by q, then concrete types first, in O(n log n). So here,
    /// unlike in a short header, `*/*` of a higher q stays before a concrete type.
    #[test]
    fn long_headers_sort_by_q_then_concrete_types() {
        let long = format!("{},application/json;q=0.5", vec!["*/*"; 13].join(","));
        let ranges = parse_accept(&long);
        assert_eq!((ranges[0].type_, ranges[13].subtype), ("*", "json"));
        let short = "*/*,application/json;q=0.5";
        assert_eq!(parse_accept(short)[0].subtype, "json");

        let mut header = vec!["*/*;q=0.1"; 5000].join(",");
        header.push_str(",application/json;q=0.5,application/vnd.kubernetes.protobuf");
        let ranges = parse_accept(&header);
        assert_eq!(ranges.len(), 5002);
        assert_eq!(ranges[0].subtype, "vnd.kubernetes.protobuf");
        assert_eq!(ranges[1].subtype, "json");
        assert!(ranges[2..].iter().all(|r| r.type_ == "*"));
        assert!(negotiates_protobuf(&header));
    }

    #[test]
    fn parameters_and_conversions() {
        let kubectl = "application/json;as=Table;v=v1;g=meta.k8s.io,application/json;as=Table;v=v1beta1;g=meta.k8s.io,application/json";
        let ranges = parse_accept(kubectl);
        assert_eq!(ranges.len(), 3);
        assert_eq!(ranges[0].param("as"), Some("Table"));
        assert_eq!(ranges[1].param("v"), Some("v1beta1"));
        assert!(ranges[0].asks_for_conversion() && ranges[1].asks_for_conversion());
        assert!(!ranges[2].asks_for_conversion());
        let watch = parse_accept("application/vnd.kubernetes.protobuf;stream=watch; q=0.9");
        assert_eq!(watch[0].param("stream"), Some("watch"));
        assert_eq!(watch[0].param("q"), None);
        assert!((watch[0].q - 0.9).abs() < f32::EPSILON);
        assert!(!watch[0].asks_for_conversion());
        assert!(parse_accept("*/*")[0].matches("application", "json"));
        assert!(parse_accept("application/*")[0].matches("application", "yaml"));
        assert!(!parse_accept("text/*")[0].matches("application", "json"));
    }
}
