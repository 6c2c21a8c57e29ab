//! AMF0, the value encoding of RTMP commands and metadata.
//!
//! Decoding is bounded by construction, because its input comes from peers
//! nobody has authenticated yet: containers nest at most `MAX_DEPTH` deep (the
//! depth is checked before descending, whatever the markers say, so the
//! recursion is at most `MAX_DEPTH` frames), and every string, array and
//! object is cut from the message that holds it, so nothing is reserved
//! beyond the bytes that actually arrived. A strict array that claims four
//! billion elements reserves at most as many slots as there are bytes left.
//!
//! Encoding is only ever applied to values Prism builds itself.

use std::fmt;

/// How deep objects and arrays may nest. Real commands and metadata nest two
/// or three levels; anything deeper is an attack on the decoder's stack.
pub const MAX_DEPTH: usize = 32;

/// One AMF0 value. Objects keep their properties in wire order, so metadata
/// re-encodes as it came.
#[derive(Clone, Debug, PartialEq)]
pub enum Value {
    Number(f64),
    Boolean(bool),
    String(String),
    Object(Vec<(String, Value)>),
    Null,
    Undefined,
    /// A back-reference to an earlier complex value; kept as its index.
    Reference(u16),
    /// An associative array (`onMetaData` is usually one).
    EcmaArray(Vec<(String, Value)>),
    StrictArray(Vec<Value>),
    Date {
        millis: f64,
        time_zone: i16,
    },
    Unsupported,
    Xml(String),
    TypedObject {
        class: String,
        properties: Vec<(String, Value)>,
    },
}

mod marker {
    pub const NUMBER: u8 = 0x00;
    pub const BOOLEAN: u8 = 0x01;
    pub const STRING: u8 = 0x02;
    pub const OBJECT: u8 = 0x03;
    pub const NULL: u8 = 0x05;
    pub const UNDEFINED: u8 = 0x06;
    pub const REFERENCE: u8 = 0x07;
    pub const ECMA_ARRAY: u8 = 0x08;
    pub const OBJECT_END: u8 = 0x09;
    pub const STRICT_ARRAY: u8 = 0x0a;
    pub const DATE: u8 = 0x0b;
    pub const LONG_STRING: u8 = 0x0c;
    pub const UNSUPPORTED: u8 = 0x0d;
    pub const XML: u8 = 0x0f;
    pub const TYPED_OBJECT: u8 = 0x10;
}

/// Why AMF0 bytes could not be decoded.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Amf0Error {
    #[error("AMF0 value cut short at byte {at}")]
    Truncated { at: usize },
    #[error("AMF0 nested deeper than {MAX_DEPTH} levels")]
    TooDeep,
    #[error("unexpected AMF0 marker {marker:#04x} at byte {at}")]
    UnexpectedMarker { marker: u8, at: usize },
}

impl Amf0Error {
    /// Whether the input went past one of Prism's bounds (as opposed to
    /// being malformed).
    pub fn is_limit(&self) -> bool {
        matches!(self, Amf0Error::TooDeep)
    }
}

/// Decodes every value in `bytes`.
pub fn decode_all(bytes: &[u8]) -> Result<Vec<Value>, Amf0Error> {
    let mut decoder = Decoder { bytes, at: 0 };
    let mut values = Vec::new();
    while decoder.at < bytes.len() {
        values.push(decoder.value(0)?);
    }
    Ok(values)
}

/// Decodes values from the front of `bytes` one at a time.
pub struct Decoder<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Decoder<'a> {
    pub fn new(bytes: &'a [u8]) -> Self {
        Self { bytes, at: 0 }
    }

    /// The next value, or `None` at the end of the input.
    pub fn next_value(&mut self) -> Option<Result<Value, Amf0Error>> {
        (self.at < self.bytes.len()).then(|| self.value(0))
    }

    /// The bytes not decoded yet.
    pub fn remaining(&self) -> &'a [u8] {
        &self.bytes[self.at..]
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], Amf0Error> {
        let end = self
            .at
            .checked_add(n)
            .filter(|&end| end <= self.bytes.len())
            .ok_or(Amf0Error::Truncated { at: self.at })?;
        let taken = &self.bytes[self.at..end];
        self.at = end;
        Ok(taken)
    }

    fn u8(&mut self) -> Result<u8, Amf0Error> {
        Ok(self.take(1)?[0])
    }

    fn u16(&mut self) -> Result<u16, Amf0Error> {
        let b = self.take(2)?;
        Ok(u16::from_be_bytes([b[0], b[1]]))
    }

    fn u32(&mut self) -> Result<u32, Amf0Error> {
        let b = self.take(4)?;
        Ok(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }

    fn f64(&mut self) -> Result<f64, Amf0Error> {
        let b = self.take(8)?;
        Ok(f64::from_be_bytes(b.try_into().expect("took 8 bytes")))
    }

    fn utf8(&mut self, len: usize) -> Result<String, Amf0Error> {
        Ok(String::from_utf8_lossy(self.take(len)?).into_owned())
    }

    fn short_string(&mut self) -> Result<String, Amf0Error> {
        let len = self.u16()? as usize;
        self.utf8(len)
    }

    fn long_string(&mut self) -> Result<String, Amf0Error> {
        let len = self.u32()? as usize;
        self.utf8(len)
    }

    /// One value at nesting `depth` (0 for a top-level value).
    fn value(&mut self, depth: usize) -> Result<Value, Amf0Error> {
        let at = self.at;
        let marker = self.u8()?;
        Ok(match marker {
            marker::NUMBER => Value::Number(self.f64()?),
            marker::BOOLEAN => Value::Boolean(self.u8()? != 0),
            marker::STRING => Value::String(self.short_string()?),
            marker::LONG_STRING => Value::String(self.long_string()?),
            marker::XML => Value::Xml(self.long_string()?),
            marker::NULL => Value::Null,
            marker::UNDEFINED => Value::Undefined,
            marker::UNSUPPORTED => Value::Unsupported,
            marker::REFERENCE => Value::Reference(self.u16()?),
            marker::DATE => Value::Date {
                millis: self.f64()?,
                time_zone: self.u16()? as i16,
            },
            marker::OBJECT => Value::Object(self.properties(depth + 1)?),
            marker::ECMA_ARRAY => {
                // The count is a hint that encoders often get wrong; the
                // end marker is what ends the array.
                self.u32()?;
                Value::EcmaArray(self.properties(depth + 1)?)
            }
            marker::TYPED_OBJECT => {
                let class = self.short_string()?;
                Value::TypedObject {
                    class,
                    properties: self.properties(depth + 1)?,
                }
            }
            marker::STRICT_ARRAY => {
                if depth + 1 > MAX_DEPTH {
                    return Err(Amf0Error::TooDeep);
                }
                let count = self.u32()? as usize;
                // Every element takes at least one byte.
                let mut values = Vec::with_capacity(count.min(self.bytes.len() - self.at));
                for _ in 0..count {
                    values.push(self.value(depth + 1)?);
                }
                Value::StrictArray(values)
            }
            // An object end outside an object, movie clips and record sets
            // (0x04, 0x0e: reserved), and AMF3 values inside AMF0 (0x11,
            // which Prism never needs to read) all end the decode.
            _ => return Err(Amf0Error::UnexpectedMarker { marker, at }),
        })
    }

    /// Properties up to the object-end marker, for a container at `depth`.
    fn properties(&mut self, depth: usize) -> Result<Vec<(String, Value)>, Amf0Error> {
        if depth > MAX_DEPTH {
            return Err(Amf0Error::TooDeep);
        }
        let mut properties = Vec::new();
        loop {
            // Some encoders end the last container at the end of the
            // message without an end marker; take what is there.
            if self.at == self.bytes.len() {
                return Ok(properties);
            }
            let name = self.short_string()?;
            if name.is_empty() && self.bytes.get(self.at) == Some(&marker::OBJECT_END) {
                self.at += 1;
                return Ok(properties);
            }
            let value = self.value(depth)?;
            properties.push((name, value));
        }
    }
}

/// Appends the encoding of `value` to `out`.
pub fn encode(value: &Value, out: &mut Vec<u8>) {
    fn short_string(s: &str, out: &mut Vec<u8>) {
        // Property names and short strings are at most 65535 bytes; Prism's
        // own names are far shorter.
        let bytes = &s.as_bytes()[..s.len().min(u16::MAX as usize)];
        out.extend_from_slice(&(bytes.len() as u16).to_be_bytes());
        out.extend_from_slice(bytes);
    }
    fn properties(props: &[(String, Value)], out: &mut Vec<u8>) {
        for (name, value) in props {
            short_string(name, out);
            encode(value, out);
        }
        out.extend_from_slice(&[0, 0, marker::OBJECT_END]);
    }
    match value {
        Value::Number(n) => {
            out.push(marker::NUMBER);
            out.extend_from_slice(&n.to_be_bytes());
        }
        Value::Boolean(b) => out.extend_from_slice(&[marker::BOOLEAN, u8::from(*b)]),
        Value::String(s) if s.len() <= u16::MAX as usize => {
            out.push(marker::STRING);
            short_string(s, out);
        }
        Value::String(s) => {
            out.push(marker::LONG_STRING);
            out.extend_from_slice(&(s.len() as u32).to_be_bytes());
            out.extend_from_slice(s.as_bytes());
        }
        Value::Xml(s) => {
            out.push(marker::XML);
            out.extend_from_slice(&(s.len() as u32).to_be_bytes());
            out.extend_from_slice(s.as_bytes());
        }
        Value::Object(props) => {
            out.push(marker::OBJECT);
            properties(props, out);
        }
        Value::EcmaArray(props) => {
            out.push(marker::ECMA_ARRAY);
            out.extend_from_slice(&(props.len() as u32).to_be_bytes());
            properties(props, out);
        }
        Value::TypedObject {
            class,
            properties: props,
        } => {
            out.push(marker::TYPED_OBJECT);
            short_string(class, out);
            properties(props, out);
        }
        Value::StrictArray(values) => {
            out.push(marker::STRICT_ARRAY);
            out.extend_from_slice(&(values.len() as u32).to_be_bytes());
            for value in values {
                encode(value, out);
            }
        }
        Value::Null => out.push(marker::NULL),
        Value::Undefined => out.push(marker::UNDEFINED),
        Value::Unsupported => out.push(marker::UNSUPPORTED),
        Value::Reference(index) => {
            out.push(marker::REFERENCE);
            out.extend_from_slice(&index.to_be_bytes());
        }
        Value::Date { millis, time_zone } => {
            out.push(marker::DATE);
            out.extend_from_slice(&millis.to_be_bytes());
            out.extend_from_slice(&time_zone.to_be_bytes());
        }
    }
}

/// Encodes a sequence of values.
pub fn encode_all(values: &[Value]) -> Vec<u8> {
    let mut out = Vec::new();
    for value in values {
        encode(value, &mut out);
    }
    out
}

impl Value {
    /// An object from string keys, in the order given.
    pub fn object<const N: usize>(fields: [(&str, Value); N]) -> Value {
        Value::Object(
            fields
                .into_iter()
                .map(|(k, v)| (k.to_string(), v))
                .collect(),
        )
    }

    pub fn string(value: &str) -> Value {
        Value::String(value.to_string())
    }

    /// A property of an object-like value (object, ECMA array, typed object).
    pub fn get(&self, name: &str) -> Option<&Value> {
        match self {
            Value::Object(props)
            | Value::EcmaArray(props)
            | Value::TypedObject {
                properties: props, ..
            } => props.iter().find(|(k, _)| k == name).map(|(_, v)| v),
            _ => None,
        }
    }

    /// A string property, if present.
    pub fn get_str(&self, name: &str) -> Option<&str> {
        match self.get(name) {
            Some(Value::String(s)) => Some(s),
            _ => None,
        }
    }

    /// A number property, if present.
    pub fn get_number(&self, name: &str) -> Option<f64> {
        match self.get(name) {
            Some(Value::Number(n)) => Some(*n),
            _ => None,
        }
    }

    pub fn as_str(&self) -> Option<&str> {
        match self {
            Value::String(s) => Some(s),
            _ => None,
        }
    }
}

impl fmt::Display for Value {
    /// A short rendering for logs and errors; never a whole tree.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Value::Number(n) => write!(f, "{n}"),
            Value::Boolean(b) => write!(f, "{b}"),
            Value::String(s) => write!(f, "{s:?}"),
            Value::Null => f.write_str("null"),
            Value::Undefined => f.write_str("undefined"),
            Value::Object(p) | Value::EcmaArray(p) => write!(f, "{{{} properties}}", p.len()),
            Value::StrictArray(v) => write!(f, "[{} values]", v.len()),
            other => write!(f, "{:?}", std::mem::discriminant(other)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_what_rml_amf0_encodes() {
        // An independent encoder's bytes, not ours.
        use rml_amf0::Amf0Value as R;
        let values = vec![
            R::Utf8String("connect".into()),
            R::Number(1.0),
            R::Object(
                [
                    ("app".to_string(), R::Utf8String("live".into())),
                    ("flag".to_string(), R::Boolean(true)),
                    ("none".to_string(), R::Null),
                ]
                .into_iter()
                .collect(),
            ),
            R::StrictArray(vec![R::Number(2.5), R::Undefined]),
        ];
        let bytes = rml_amf0::serialize(&values).unwrap();
        let decoded = decode_all(&bytes).unwrap();
        assert_eq!(decoded[0], Value::string("connect"));
        assert_eq!(decoded[1], Value::Number(1.0));
        assert_eq!(decoded[2].get_str("app"), Some("live"));
        assert_eq!(decoded[2].get("flag"), Some(&Value::Boolean(true)));
        assert_eq!(
            decoded[3],
            Value::StrictArray(vec![Value::Number(2.5), Value::Undefined])
        );
    }

    #[test]
    fn encodes_what_rml_amf0_decodes() {
        let ours = encode_all(&[
            Value::string("onStatus"),
            Value::Number(0.0),
            Value::Null,
            Value::object([("code", Value::string("NetStream.Publish.Start"))]),
            Value::EcmaArray(vec![("width".into(), Value::Number(1280.0))]),
        ]);
        let theirs = rml_amf0::deserialize(&mut std::io::Cursor::new(&ours)).unwrap();
        assert_eq!(theirs.len(), 5);
        assert_eq!(decode_all(&ours).unwrap().len(), 5);
    }

    /// The daemon killer: a strict array whose first element is an
    /// object-end marker, then half a million nested objects.
    #[test]
    fn the_strict_array_bomb_is_refused_without_recursing() {
        let mut bomb = vec![2, 0, 7];
        bomb.extend_from_slice(b"connect");
        bomb.push(0);
        bomb.extend_from_slice(&1f64.to_be_bytes());
        bomb.extend_from_slice(&[0x0a, 0, 0, 0, 1, 0x09]);
        for _ in 0..500_000 {
            bomb.extend_from_slice(&[3, 0, 1, b'a']);
        }
        let error = decode_all(&bomb).unwrap_err();
        assert!(matches!(
            error,
            Amf0Error::UnexpectedMarker { marker: 9, .. }
        ));
        // The nesting alone, however it is reached, stops at the depth cap.
        let mut nested = Vec::new();
        for _ in 0..500_000 {
            nested.extend_from_slice(&[3, 0, 1, b'a']);
        }
        assert_eq!(decode_all(&nested).unwrap_err(), Amf0Error::TooDeep);
        let arrays: Vec<u8> = (0..100_000).flat_map(|_| [10, 0, 0, 0, 1]).collect();
        assert_eq!(decode_all(&arrays).unwrap_err(), Amf0Error::TooDeep);
        let mixed: Vec<u8> = (0..100_000)
            .flat_map(|_| [8, 0, 0, 0, 1, 0, 1, b'k', 10, 0, 0, 0, 1])
            .collect();
        assert_eq!(decode_all(&mixed).unwrap_err(), Amf0Error::TooDeep);
    }

    #[test]
    fn nesting_up_to_the_cap_decodes() {
        let mut value = Value::Null;
        for _ in 0..MAX_DEPTH {
            value = Value::object([("x", value)]);
        }
        let bytes = encode_all(&[value.clone()]);
        assert_eq!(decode_all(&bytes).unwrap(), vec![value.clone()]);
        let deeper = encode_all(&[Value::object([("x", value)])]);
        assert_eq!(decode_all(&deeper).unwrap_err(), Amf0Error::TooDeep);
    }

    #[test]
    fn huge_counts_reserve_nothing_they_cannot_fill() {
        // Claims 4 billion elements, has three bytes.
        let bytes = [10, 0xff, 0xff, 0xff, 0xff, 5, 5, 5];
        assert!(matches!(
            decode_all(&bytes).unwrap_err(),
            Amf0Error::Truncated { .. }
        ));
        let long = [12, 0xff, 0xff, 0xff, 0xff, b'a'];
        assert!(matches!(
            decode_all(&long).unwrap_err(),
            Amf0Error::Truncated { .. }
        ));
    }

    #[test]
    fn an_object_cut_at_the_end_of_the_message_keeps_its_properties() {
        let bytes = [3, 0, 1, b'w', 0, 0x40, 0x94, 0, 0, 0, 0, 0, 0];
        let values = decode_all(&bytes).unwrap();
        assert_eq!(values[0].get_number("w"), Some(1280.0));
    }
}

#[cfg(test)]
mod no_panics {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]

        /// Random bytes weighted toward AMF0 markers decode or fail; never panic.
        #[test]
        fn arbitrary_bytes(bytes in proptest::collection::vec(
            prop_oneof![0u8..0x12, any::<u8>()], 0..400)) {
            let _ = decode_all(&bytes);
        }

        /// Whatever decodes re-encodes to something that decodes the same.
        #[test]
        fn decoded_values_round_trip(bytes in proptest::collection::vec(
            prop_oneof![0u8..0x12, any::<u8>()], 0..200)) {
            if let Ok(values) = decode_all(&bytes) {
                let again = decode_all(&encode_all(&values)).unwrap();
                // NaN never equals itself; compare the encodings instead.
                prop_assert_eq!(encode_all(&again), encode_all(&values));
            }
        }
    }
}
