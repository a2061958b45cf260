//! `ObjectMeta` as apimachinery's Go structs write it.
//!
//! k8s-openapi serializes `ObjectMeta` with its fields in alphabetical order; kube-apiserver (and
//! Loft's apiserver, built on it) writes them in the Go struct's order and leaves out what Go's
//! `omitempty` leaves out. Objects kubegate serves go through [`GoObjectMeta`], so their bytes
//! are the bytes a Go server sends.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{
    ManagedFieldsEntry, ObjectMeta, OwnerReference,
};
use serde::ser::{Serialize, SerializeMap, Serializer};

/// Serializes an [`ObjectMeta`] in `k8s.io/apimachinery/pkg/apis/meta/v1.ObjectMeta` field order
/// (`name`, `generateName`, `namespace`, `selfLink`, `uid`, `resourceVersion`, `generation`,
/// `creationTimestamp`, …, `managedFields`), leaving out empty strings, zero `generation`, and
/// empty maps and lists, as Go's `omitempty` does. An unset `creationTimestamp` is left out too
/// (`omitzero`, apimachinery ≥ 1.34).
#[derive(Debug, Clone, Copy)]
pub struct GoObjectMeta<'a>(pub &'a ObjectMeta);

impl Serialize for GoObjectMeta<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let m = self.0;
        let mut map = serializer.serialize_map(None)?;
        string(&mut map, "name", &m.name)?;
        string(&mut map, "generateName", &m.generate_name)?;
        string(&mut map, "namespace", &m.namespace)?;
        string(&mut map, "selfLink", &m.self_link)?;
        string(&mut map, "uid", &m.uid)?;
        string(&mut map, "resourceVersion", &m.resource_version)?;
        if let Some(generation) = m.generation.filter(|g| *g != 0) {
            map.serialize_entry("generation", &generation)?;
        }
        if let Some(created) = &m.creation_timestamp {
            map.serialize_entry("creationTimestamp", created)?;
        }
        if let Some(deleted) = &m.deletion_timestamp {
            map.serialize_entry("deletionTimestamp", deleted)?;
        }
        // A pointer in Go: set means written, zero included.
        if let Some(grace) = &m.deletion_grace_period_seconds {
            map.serialize_entry("deletionGracePeriodSeconds", grace)?;
        }
        if let Some(labels) = m.labels.as_ref().filter(|l| !l.is_empty()) {
            map.serialize_entry("labels", labels)?;
        }
        if let Some(annotations) = m.annotations.as_ref().filter(|a| !a.is_empty()) {
            map.serialize_entry("annotations", annotations)?;
        }
        if let Some(owners) = m.owner_references.as_ref().filter(|o| !o.is_empty()) {
            let owners: Vec<GoOwnerReference<'_>> = owners.iter().map(GoOwnerReference).collect();
            map.serialize_entry("ownerReferences", &owners)?;
        }
        if let Some(finalizers) = m.finalizers.as_ref().filter(|f| !f.is_empty()) {
            map.serialize_entry("finalizers", finalizers)?;
        }
        if let Some(managed) = m.managed_fields.as_ref().filter(|f| !f.is_empty()) {
            let managed: Vec<GoManagedFields<'_>> = managed.iter().map(GoManagedFields).collect();
            map.serialize_entry("managedFields", &managed)?;
        }
        map.end()
    }
}

/// A string field with `omitempty`.
fn string<M: SerializeMap>(map: &mut M, key: &str, value: &Option<String>) -> Result<(), M::Error> {
    match value.as_deref() {
        Some(v) if !v.is_empty() => map.serialize_entry(key, v),
        _ => Ok(()),
    }
}

/// `OwnerReference` in Go order: `apiVersion`, `kind`, `name`, `uid`, `controller`,
/// `blockOwnerDeletion` (the last two pointers).
struct GoOwnerReference<'a>(&'a OwnerReference);

impl Serialize for GoOwnerReference<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let o = self.0;
        let mut map = serializer.serialize_map(None)?;
        map.serialize_entry("apiVersion", &o.api_version)?;
        map.serialize_entry("kind", &o.kind)?;
        map.serialize_entry("name", &o.name)?;
        map.serialize_entry("uid", &o.uid)?;
        if let Some(controller) = &o.controller {
            map.serialize_entry("controller", controller)?;
        }
        if let Some(block) = &o.block_owner_deletion {
            map.serialize_entry("blockOwnerDeletion", block)?;
        }
        map.end()
    }
}

/// `ManagedFieldsEntry` in Go order: `manager`, `operation`, `apiVersion`, `time`,
/// `fieldsType`, `fieldsV1`, `subresource`.
struct GoManagedFields<'a>(&'a ManagedFieldsEntry);

impl Serialize for GoManagedFields<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let f = self.0;
        let mut map = serializer.serialize_map(None)?;
        string(&mut map, "manager", &f.manager)?;
        string(&mut map, "operation", &f.operation)?;
        string(&mut map, "apiVersion", &f.api_version)?;
        if let Some(time) = &f.time {
            map.serialize_entry("time", time)?;
        }
        string(&mut map, "fieldsType", &f.fields_type)?;
        if let Some(fields) = &f.fields_v1 {
            map.serialize_entry("fieldsV1", fields)?;
        }
        string(&mut map, "subresource", &f.subresource)?;
        map.end()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
    use std::collections::BTreeMap;

    fn json(meta: &ObjectMeta) -> String {
        serde_json::to_string(&GoObjectMeta(meta)).unwrap()
    }

    /// Field order and omissions as `json.Marshal(metav1.ObjectMeta{...})` writes them.
    #[test]
    fn fields_come_in_go_struct_order() {
        let created: Time = serde_json::from_str("\"2026-01-02T03:04:05Z\"").unwrap();
        let meta = ObjectMeta {
            annotations: Some(BTreeMap::from([
                ("b".into(), "2".into()),
                ("a".into(), "1".into()),
            ])),
            creation_timestamp: Some(created),
            finalizers: Some(vec!["f".into()]),
            generation: Some(3),
            labels: Some(BTreeMap::from([("app".into(), "x".into())])),
            name: Some("n".into()),
            namespace: Some("ns".into()),
            owner_references: Some(vec![OwnerReference {
                api_version: "v1".into(),
                block_owner_deletion: Some(true),
                controller: Some(false),
                kind: "ConfigMap".into(),
                name: "o".into(),
                uid: "u1".into(),
            }]),
            resource_version: Some("7".into()),
            uid: Some("u".into()),
            ..Default::default()
        };
        assert_eq!(
            json(&meta),
            r#"{"name":"n","namespace":"ns","uid":"u","resourceVersion":"7","generation":3,"creationTimestamp":"2026-01-02T03:04:05Z","labels":{"app":"x"},"annotations":{"a":"1","b":"2"},"ownerReferences":[{"apiVersion":"v1","kind":"ConfigMap","name":"o","uid":"u1","controller":false,"blockOwnerDeletion":true}],"finalizers":["f"]}"#
        );
    }

    /// Go's `omitempty` leaves out `""`, `0` and empty maps and lists; a set pointer stays.
    #[test]
    fn empty_values_are_left_out_as_go_leaves_them_out() {
        let meta = ObjectMeta {
            name: Some(String::new()),
            generation: Some(0),
            labels: Some(BTreeMap::new()),
            finalizers: Some(Vec::new()),
            deletion_grace_period_seconds: Some(0),
            ..Default::default()
        };
        assert_eq!(json(&meta), r#"{"deletionGracePeriodSeconds":0}"#);
        assert_eq!(json(&ObjectMeta::default()), "{}");
    }
}
