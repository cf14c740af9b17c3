//! A small bencode codec for the tests' ng client, written apart from the
//! relay's own so that a bug shared by the two cannot hide itself: the
//! tests encode and decode with this one, the relay with its own.

use std::fmt;

/// A bencode value. Dictionaries keep wire (insertion) order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Value {
    /// `i<n>e`
    Int(i64),
    /// `<len>:<bytes>`
    Bytes(Vec<u8>),
    /// `l...e`
    List(Vec<Value>),
    /// `d...e`
    Dict(Vec<(Vec<u8>, Value)>),
}

/// Why [`decode`] rejected its input: the byte offset and what was wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DecodeError {
    /// Offset in the input.
    pub at: usize,
    /// What was expected or found.
    pub what: &'static str,
}

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "bencode: {} at byte {}", self.what, self.at)
    }
}

impl std::error::Error for DecodeError {}

/// Decodes exactly one value filling all of `input`.
pub fn decode(input: &[u8]) -> Result<Value, DecodeError> {
    let mut reader = Reader { input, pos: 0 };
    let value = reader.value(0)?;
    if reader.pos == input.len() {
        Ok(value)
    } else {
        Err(reader.error("trailing bytes"))
    }
}

struct Reader<'a> {
    input: &'a [u8],
    pos: usize,
}

impl Reader<'_> {
    fn error(&self, what: &'static str) -> DecodeError {
        DecodeError { at: self.pos, what }
    }

    fn peek(&self) -> Result<u8, DecodeError> {
        self.input.get(self.pos).copied().ok_or_else(|| self.error("unexpected end"))
    }

    /// Digits (with an optional `-`) up to `end`, which is consumed.
    fn number(&mut self, end: u8) -> Result<i64, DecodeError> {
        let rest = &self.input[self.pos..];
        let len = rest.iter().position(|&b| b == end).ok_or_else(|| self.error("unterminated number"))?;
        let text = std::str::from_utf8(&rest[..len]).map_err(|_| self.error("number is not ASCII"))?;
        let n = text.parse().map_err(|_| self.error("bad number"))?;
        self.pos += len + 1;
        Ok(n)
    }

    fn bytes(&mut self) -> Result<Vec<u8>, DecodeError> {
        let len = usize::try_from(self.number(b':')?).map_err(|_| self.error("negative length"))?;
        let end =
            self.pos.checked_add(len).filter(|&e| e <= self.input.len()).ok_or_else(|| self.error("short string"))?;
        let out = self.input[self.pos..end].to_vec();
        self.pos = end;
        Ok(out)
    }

    fn value(&mut self, depth: usize) -> Result<Value, DecodeError> {
        if depth > 64 {
            return Err(self.error("nested too deep"));
        }
        match self.peek()? {
            b'i' => {
                self.pos += 1;
                self.number(b'e').map(Value::Int)
            }
            b'0'..=b'9' => self.bytes().map(Value::Bytes),
            b'l' => {
                self.pos += 1;
                let mut items = Vec::new();
                while self.peek()? != b'e' {
                    items.push(self.value(depth + 1)?);
                }
                self.pos += 1;
                Ok(Value::List(items))
            }
            b'd' => {
                self.pos += 1;
                let mut items = Vec::new();
                while self.peek()? != b'e' {
                    let key = self.bytes()?;
                    items.push((key, self.value(depth + 1)?));
                }
                self.pos += 1;
                Ok(Value::Dict(items))
            }
            _ => Err(self.error("not a bencode value")),
        }
    }
}

impl Value {
    /// A byte string holding `s`.
    pub fn str(s: &str) -> Value {
        Value::Bytes(s.as_bytes().to_vec())
    }

    /// An empty dictionary.
    pub fn dict() -> Value {
        Value::Dict(Vec::new())
    }

    /// A dictionary of `pairs`, in order.
    pub fn dict_of(pairs: &[(&str, Value)]) -> Value {
        Value::Dict(pairs.iter().map(|(k, v)| (k.as_bytes().to_vec(), v.clone())).collect())
    }

    /// Sets `key` in a dictionary (replacing an earlier value); a no-op on
    /// other values. Returns `self` for chaining.
    pub fn insert(&mut self, key: &str, value: Value) -> &mut Self {
        if let Value::Dict(items) = self {
            match items.iter_mut().find(|(k, _)| k == key.as_bytes()) {
                Some(slot) => slot.1 = value,
                None => items.push((key.as_bytes().to_vec(), value)),
            }
        }
        self
    }

    /// The value of `key` in a dictionary.
    pub fn get(&self, key: &str) -> Option<&Value> {
        self.as_dict()?.iter().find(|(k, _)| k == key.as_bytes()).map(|(_, v)| v)
    }

    /// A byte string's bytes.
    pub fn as_bytes(&self) -> Option<&[u8]> {
        if let Value::Bytes(b) = self {
            Some(b)
        } else {
            None
        }
    }

    /// A byte string that is UTF-8.
    pub fn as_str(&self) -> Option<&str> {
        std::str::from_utf8(self.as_bytes()?).ok()
    }

    /// An integer.
    pub fn as_int(&self) -> Option<i64> {
        if let Value::Int(n) = self {
            Some(*n)
        } else {
            None
        }
    }

    /// A list's items.
    pub fn as_list(&self) -> Option<&[Value]> {
        if let Value::List(l) = self {
            Some(l)
        } else {
            None
        }
    }

    /// A dictionary's entries.
    pub fn as_dict(&self) -> Option<&[(Vec<u8>, Value)]> {
        if let Value::Dict(d) = self {
            Some(d)
        } else {
            None
        }
    }

    /// The encoding.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::new();
        self.encode(&mut out);
        out
    }

    /// Appends the encoding to `out`.
    pub fn encode(&self, out: &mut Vec<u8>) {
        let string = |out: &mut Vec<u8>, b: &[u8]| {
            out.extend_from_slice(b.len().to_string().as_bytes());
            out.push(b':');
            out.extend_from_slice(b);
        };
        match self {
            Value::Int(n) => out.extend_from_slice(format!("i{n}e").as_bytes()),
            Value::Bytes(b) => string(out, b),
            Value::List(items) => {
                out.push(b'l');
                items.iter().for_each(|v| v.encode(out));
                out.push(b'e');
            }
            Value::Dict(items) => {
                out.push(b'd');
                for (k, v) in items {
                    string(out, k);
                    v.encode(out);
                }
                out.push(b'e');
            }
        }
    }
}

impl From<&str> for Value {
    fn from(s: &str) -> Value {
        Value::str(s)
    }
}

impl From<String> for Value {
    fn from(s: String) -> Value {
        Value::Bytes(s.into_bytes())
    }
}

impl From<i64> for Value {
    fn from(n: i64) -> Value {
        Value::Int(n)
    }
}

impl From<Vec<Value>> for Value {
    fn from(items: Vec<Value>) -> Value {
        Value::List(items)
    }
}

/// Renders a value as compact JSON-like text, for logs and failure messages.
pub fn render(v: &Value) -> String {
    match v {
        Value::Int(n) => n.to_string(),
        Value::Bytes(b) => format!("{:?}", String::from_utf8_lossy(b)),
        Value::List(items) => format!("[{}]", items.iter().map(render).collect::<Vec<_>>().join(", ")),
        Value::Dict(items) => {
            let fields: Vec<String> =
                items.iter().map(|(k, v)| format!("{:?}: {}", String::from_utf8_lossy(k), render(v))).collect();
            format!("{{{}}}", fields.join(", "))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_rejects() {
        let mut d = Value::dict();
        d.insert("command", "offer".into()).insert("n", Value::Int(-3)).insert("l", vec![Value::str("a")].into());
        let wire = d.to_bytes();
        assert_eq!(wire, b"d7:command5:offer1:ni-3e1:ll1:aee");
        assert_eq!(decode(&wire), Ok(d.clone()));
        assert_eq!(d.get("command").and_then(Value::as_str), Some("offer"));
        assert_eq!(render(&d), r#"{"command": "offer", "n": -3, "l": ["a"]}"#);
        for bad in [&b""[..], b"i1", b"5:ab", b"d1:a", b"x", b"i1ei2e", b"-1:"] {
            assert!(decode(bad).is_err(), "{bad:?}");
        }
    }
}
