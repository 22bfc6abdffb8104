//! Reading a request as borrowed raw JSON: values are slices of the body, never `Value` trees, so translating costs a small multiple of the body.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::fmt;

use serde::de::{self, DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};
use serde::Deserialize;
use serde_json::value::RawValue;

use super::Refusal;

/// The deepest nesting a translated request may have: serde_json's own limit, which the
/// raw reader does not enforce, so a body the gateway could not read back is refused.
pub const MAX_DEPTH: usize = 128;

/// A JSON object's members, one level deep: each value is its raw text in the body. A
/// repeated name keeps its last value, as a `Value` would.
pub type Members<'a> = BTreeMap<String, &'a RawValue>;

/// A JSON object's members one level deep, sorted by name, for the top level of a
/// request: a list of names borrowed from the body (when they have no escapes), cheaper to
/// build than [`Members`] for the few fields a request has. A repeated name keeps its last
/// value, as with [`Members`].
#[derive(Default)]
pub struct Fields<'a>(Vec<(Cow<'a, str>, &'a RawValue)>);

impl<'a> Fields<'a> {
    /// Takes the member `name` out.
    pub fn remove(&mut self, name: &str) -> Option<&'a RawValue> {
        let at = self
            .0
            .binary_search_by(|(n, _)| n.as_ref().cmp(name))
            .ok()?;
        Some(self.0.remove(at).1)
    }
}

impl<'a> IntoIterator for Fields<'a> {
    type Item = (Cow<'a, str>, &'a RawValue);
    type IntoIter = std::vec::IntoIter<Self::Item>;

    /// The members left, by name.
    fn into_iter(self) -> Self::IntoIter {
        self.0.into_iter()
    }
}

impl<'de> Deserialize<'de> for Fields<'de> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_map(FieldsVisitor)
    }
}

struct FieldsVisitor;

impl<'de> Visitor<'de> for FieldsVisitor {
    type Value = Fields<'de>;

    fn expecting(&self, formatter: &mut fmt::Formatter) -> fmt::Result {
        formatter.write_str("a JSON object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Fields<'de>, A::Error> {
        let mut list = Vec::with_capacity(map.size_hint().unwrap_or(8).min(64));
        while let Some(Text(name)) = map.next_key::<Text<'de>>()? {
            list.push((name, map.next_value::<&'de RawValue>()?));
        }
        // A stable sort keeps a repeated name's values in order; the last one stays.
        list.sort_by(|a, b| a.0.cmp(&b.0));
        list.dedup_by(|later, kept| {
            let repeated = later.0 == kept.0;
            if repeated {
                std::mem::swap(&mut later.1, &mut kept.1);
            }
            repeated
        });
        Ok(Fields(list))
    }
}

/// A JSON string's text, borrowed when it has no escapes.
#[derive(Deserialize)]
struct Text<'a>(#[serde(borrow)] Cow<'a, str>);

/// The text of a JSON string; `None` for any other value.
pub fn text(raw: &RawValue) -> Option<Cow<'_, str>> {
    raw.get()
        .starts_with('"')
        .then(|| serde_json::from_str::<Text<'_>>(raw.get()).ok())
        .flatten()
        .map(|t| t.0)
}

/// The text of an optional member that must be a string.
pub fn member_text<'a>(members: &Members<'a>, name: &str) -> Option<Cow<'a, str>> {
    members.get(name).and_then(|raw| text(raw))
}

pub fn is_null(raw: &RawValue) -> bool {
    raw.get() == "null"
}

pub fn is_string(raw: &RawValue) -> bool {
    raw.get().starts_with('"')
}

pub fn is_object(raw: &RawValue) -> bool {
    raw.get().starts_with('{')
}

pub fn is_array(raw: &RawValue) -> bool {
    raw.get().starts_with('[')
}

pub fn is_bool(raw: &RawValue) -> bool {
    matches!(raw.get(), "true" | "false")
}

/// An object's members (one level deep); `None` when `raw` is not an object.
pub fn members(raw: &RawValue) -> Option<Members<'_>> {
    if !is_object(raw) {
        return None;
    }
    serde_json::from_str(raw.get()).ok()
}

/// Calls `each` with every element of the JSON array `raw`, in order, without collecting
/// them: the first refusal stops the walk and is returned.
pub fn for_each<'a>(
    raw: &'a RawValue,
    mut each: impl FnMut(usize, &'a RawValue) -> Result<(), Refusal>,
) -> Result<(), Refusal> {
    let mut refusal = None;
    let mut deserializer = serde_json::Deserializer::from_str(raw.get());
    let walked = deserializer.deserialize_seq(Elements {
        each: &mut each,
        refusal: &mut refusal,
    });
    match (refusal, walked) {
        (Some(refusal), _) => Err(refusal),
        (None, Ok(())) => Ok(()),
        // `raw` was read as JSON already: only a value that is not an array gets here.
        (None, Err(_)) => Err(Refusal::new("body", "Expected a list.")),
    }
}

struct Elements<'e, F> {
    each: &'e mut F,
    refusal: &'e mut Option<Refusal>,
}

impl<'de, F> Visitor<'de> for Elements<'_, F>
where
    F: FnMut(usize, &'de RawValue) -> Result<(), Refusal>,
{
    type Value = ();

    fn expecting(&self, formatter: &mut fmt::Formatter) -> fmt::Result {
        formatter.write_str("a list")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        let mut index = 0;
        while let Some(element) = seq.next_element_seed(Borrowed)? {
            if let Err(refusal) = (self.each)(index, element) {
                *self.refusal = Some(refusal);
                return Err(de::Error::custom("refused"));
            }
            index += 1;
        }
        Ok(())
    }
}

/// Reads one element as its raw text.
struct Borrowed;

impl<'de> DeserializeSeed<'de> for Borrowed {
    type Value = &'de RawValue;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Self::Value, D::Error> {
        <&RawValue>::deserialize(deserializer)
    }
}

/// Whether `json` nests arrays and objects no deeper than `limit`. A scan of the bytes,
/// strings skipped: no allocation.
pub fn nesting_within(json: &[u8], limit: usize) -> bool {
    let (mut depth, mut in_string, mut escaped) = (0usize, false, false);
    for &byte in json {
        if in_string {
            match byte {
                _ if escaped => escaped = false,
                b'\\' => escaped = true,
                b'"' => in_string = false,
                _ => {}
            }
            continue;
        }
        match byte {
            b'"' => in_string = true,
            b'[' | b'{' => {
                depth += 1;
                if depth > limit {
                    return false;
                }
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    true
}

/// Appends `text` as a JSON string.
pub fn push_string(out: &mut String, text: &str) {
    // Serialising a `str` cannot fail; the fallback keeps the output valid JSON anyway.
    match serde_json::to_string(text) {
        Ok(quoted) => out.push_str(&quoted),
        Err(_) => out.push_str("\"\""),
    }
}

/// `raw` as an owned raw value (a copy of its text; no parse tree).
pub fn owned(raw: &RawValue) -> Box<RawValue> {
    raw.to_owned()
}

/// Owned raw JSON for text the gateway wrote itself (always valid); `null` otherwise.
pub fn from_json(json: String) -> Box<RawValue> {
    RawValue::from_string(json).unwrap_or_default()
}
