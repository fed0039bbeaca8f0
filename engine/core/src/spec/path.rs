//! The dotted field path (`steps.sim.resources.ranks`) of a parse error, for messages.
//!
//! `serde_path_to_error` records the path serde walked to the failing node. Two kinds of
//! its segments need help: the `value` field of serde-saphyr's `Spanned` wrapper (every
//! [`Sp`](super::span::Sp) adds one; it is not a key of the document), and the keys of
//! maps whose keys are spanned themselves (step, parameter, input names...), which it
//! cannot see and records as unknown. Those names are read from the document's tree of
//! keys: of the mapping the path has reached, the entry whose key comes last before the
//! error's place.

use serde::de::{self, Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_path_to_error::Segment;

use super::span::Sp;

/// Field path of an error at byte `offset` of `text`, given the path serde walked to it.
pub(super) fn field_path(text: &str, offset: usize, path: &serde_path_to_error::Path) -> String {
    let mut segments: Vec<&Segment> =
        path.iter().filter(|s| !matches!(s, Segment::Map { key } if key == SPANNED_VALUE)).collect();
    // An error met while reading a key (a duplicate) concerns the mapping, not the key.
    if matches!(segments.last(), Some(Segment::Unknown)) {
        segments.pop();
    }
    // The tree is read only when the path crosses a map with spanned keys.
    let tree = segments.iter().any(|s| matches!(s, Segment::Unknown)).then(|| KeyTree::parse(text)).flatten();
    let mut node = tree.as_ref();
    let mut parts: Vec<String> = vec![];
    for seg in segments {
        match seg {
            Segment::Map { key } | Segment::Enum { variant: key } => {
                parts.push(key.clone());
                node = node.and_then(|n| n.child(key));
            }
            Segment::Seq { index } => node = node.and_then(|n| n.item(*index)),
            Segment::Unknown => match node.and_then(|n| n.entry_before(offset)) {
                Some((key, child)) => {
                    parts.push(key.to_string());
                    node = Some(child);
                }
                None => break,
            },
        }
    }
    parts.join(".")
}

/// The field `Spanned<T>` deserializes its value from.
const SPANNED_VALUE: &str = "value";

/// The keys of a YAML document, each with the byte offset where it is written.
#[derive(Debug)]
enum KeyTree {
    Map(Vec<(String, usize, KeyTree)>),
    Seq(Vec<KeyTree>),
    Leaf,
}

impl KeyTree {
    fn parse(text: &str) -> Option<KeyTree> {
        let mut o = super::options();
        // The tree only names places; repeated keys were reported already.
        o.duplicate_keys = serde_saphyr::DuplicateKeyPolicy::FirstWins;
        serde_saphyr::from_str_with_options(text, o).ok()
    }

    fn child(&self, key: &str) -> Option<&KeyTree> {
        match self {
            KeyTree::Map(entries) => entries.iter().find(|(k, _, _)| k == key).map(|(_, _, t)| t),
            _ => None,
        }
    }

    fn item(&self, index: usize) -> Option<&KeyTree> {
        match self {
            KeyTree::Seq(items) => items.get(index),
            _ => None,
        }
    }

    /// The entry of a mapping whose key is the last one written before `offset`.
    fn entry_before(&self, offset: usize) -> Option<(&str, &KeyTree)> {
        match self {
            KeyTree::Map(entries) => {
                entries.iter().rev().find(|(_, at, _)| *at <= offset).map(|(k, _, t)| (k.as_str(), t))
            }
            _ => None,
        }
    }
}

impl<'de> Deserialize<'de> for KeyTree {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(TreeVisitor)
    }
}

struct TreeVisitor;

macro_rules! leaf {
    ($($f:ident: $t:ty),*) => {$(
        fn $f<E: de::Error>(self, _: $t) -> Result<KeyTree, E> {
            Ok(KeyTree::Leaf)
        }
    )*};
}

impl<'de> Visitor<'de> for TreeVisitor {
    type Value = KeyTree;
    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("any YAML node")
    }
    leaf!(visit_bool: bool, visit_i64: i64, visit_u64: u64, visit_f64: f64, visit_str: &str);
    fn visit_unit<E: de::Error>(self) -> Result<KeyTree, E> {
        Ok(KeyTree::Leaf)
    }
    fn visit_none<E: de::Error>(self) -> Result<KeyTree, E> {
        Ok(KeyTree::Leaf)
    }
    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<KeyTree, D::Error> {
        KeyTree::deserialize(d)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<KeyTree, A::Error> {
        let mut items = vec![];
        while let Some(t) = seq.next_element()? {
            items.push(t);
        }
        Ok(KeyTree::Seq(items))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<KeyTree, A::Error> {
        let mut entries = vec![];
        while let Some(key) = map.next_key::<Sp<KeyName>>()? {
            let value = map.next_value()?;
            entries.push((key.value.0, key.span.offset, value));
        }
        Ok(KeyTree::Map(entries))
    }
}

/// A mapping key of any scalar type, as text.
struct KeyName(String);

impl<'de> Deserialize<'de> for KeyName {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = KeyName;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a mapping key")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<KeyName, E> {
                Ok(KeyName(v.to_string()))
            }
            fn visit_bool<E: de::Error>(self, v: bool) -> Result<KeyName, E> {
                Ok(KeyName(v.to_string()))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<KeyName, E> {
                Ok(KeyName(v.to_string()))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<KeyName, E> {
                Ok(KeyName(v.to_string()))
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<KeyName, E> {
                Ok(KeyName(v.to_string()))
            }
            fn visit_unit<E: de::Error>(self) -> Result<KeyName, E> {
                Ok(KeyName(String::new()))
            }
        }
        d.deserialize_any(V)
    }
}
