#![no_main]
//! Arbitrary method, path and query: RequestInfo never panics, and what it returns borrows
//! consistently (resource, name and namespace come from the path or the query).

use kubegate_routing::RequestInfo;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(input) = std::str::from_utf8(data) else { return };
    let mut parts = input.splitn(3, '\n');
    let method = parts.next().unwrap_or("");
    let path = parts.next().unwrap_or("");
    let query = parts.next();
    if let Ok(info) = RequestInfo::parse(method, path, query) {
        let _ = info.is_long_running();
        let _ = info.field_requirements();
        let _ = info.label_requirements();
        if info.is_resource_request {
            assert!(path.contains(info.resource));
            assert!(path.contains(info.namespace));
            assert!(info.parts().count() >= 1);
        } else {
            assert_eq!(info.parts().count(), 0);
        }
    }
});
