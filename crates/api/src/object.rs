//! Shared serde plumbing for top-level objects (`apiVersion`, `kind`, `metadata`, `spec`, `status`).

use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use serde::{Deserialize, Deserializer, Serialize, Serializer, de::Error as _};

/// Go's order: `TypeMeta` (`kind`, then `apiVersion`, each left out when empty, as Go's
/// `omitempty` leaves them out of a typed list's items), `metadata`, `spec`, `status`.
#[derive(Serialize)]
struct Out<'a, S, T> {
    #[serde(skip_serializing_if = "str::is_empty")]
    kind: &'static str,
    #[serde(rename = "apiVersion", skip_serializing_if = "str::is_empty")]
    api_version: &'static str,
    metadata: crate::GoObjectMeta<'a>,
    spec: &'a S,
    #[serde(skip_serializing_if = "Option::is_none")]
    status: Option<&'a T>,
}

#[derive(Deserialize)]
#[serde(bound(deserialize = "S: Deserialize<'de> + Default, T: Deserialize<'de>"))]
struct In<S, T> {
    #[serde(rename = "apiVersion", default)]
    api_version: Option<String>,
    #[serde(default)]
    kind: Option<String>,
    #[serde(default)]
    metadata: Option<ObjectMeta>,
    #[serde(default)]
    spec: Option<S>,
    #[serde(default)]
    status: Option<T>,
}

/// Writes an object: `kind` and `apiVersion` empty for an item of a `<Kind>List`.
pub(crate) fn serialize<S, T, Ser>(
    (kind, api_version): (&'static str, &'static str),
    metadata: &ObjectMeta,
    spec: &S,
    status: Option<&T>,
    serializer: Ser,
) -> Result<Ser::Ok, Ser::Error>
where
    S: Serialize,
    T: Serialize,
    Ser: Serializer,
{
    Out {
        kind,
        api_version,
        metadata: crate::GoObjectMeta(metadata),
        spec,
        status,
    }
    .serialize(serializer)
}

/// An object that can be written as an item of a `<Kind>List`.
pub trait ListItem {
    /// Writes the object without `kind` and `apiVersion`, as Go API servers write the items of a
    /// typed list (the list's own `kind` names them).
    fn serialize_item<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error>;
}

/// The `items` of a `<Kind>List`, each written by [`ListItem::serialize_item`].
#[derive(Debug, Clone, Copy)]
pub struct ListItems<'a, T>(pub &'a [T]);

impl<T: ListItem> Serialize for ListItems<'_, T> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        struct One<'a, T>(&'a T);
        impl<T: ListItem> Serialize for One<'_, T> {
            fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                self.0.serialize_item(serializer)
            }
        }
        serializer.collect_seq(self.0.iter().map(One))
    }
}

/// `apiVersion` and `kind` may be absent (list items, hand-written fixtures), but when present they
/// must name this type: decoding a `Project` as a `Cluster` is a bug worth an error.
pub(crate) fn deserialize<'de, R, S, T, D>(
    deserializer: D,
) -> Result<(ObjectMeta, S, Option<T>), D::Error>
where
    R: k8s_openapi::Resource,
    S: Deserialize<'de> + Default,
    T: Deserialize<'de>,
    D: Deserializer<'de>,
{
    let raw = In::<S, T>::deserialize(deserializer)?;
    if let Some(api_version) = raw.api_version.as_deref()
        && api_version != R::API_VERSION
    {
        return Err(D::Error::custom(format_args!(
            "expected apiVersion {:?}, got {:?}",
            R::API_VERSION,
            api_version
        )));
    }
    if let Some(kind) = raw.kind.as_deref()
        && kind != R::KIND
    {
        return Err(D::Error::custom(format_args!(
            "expected kind {:?}, got {:?}",
            R::KIND,
            kind
        )));
    }
    Ok((
        raw.metadata.unwrap_or_default(),
        raw.spec.unwrap_or_default(),
        raw.status,
    ))
}

/// Go decodes `null` into a zero value; so do we, for slices and strings.
pub(crate) fn nullable<'de, D, T>(deserializer: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de> + Default,
{
    Ok(Option::<T>::deserialize(deserializer)?.unwrap_or_default())
}
