//! Bencode codec for the rtpengine "ng" control protocol.
//!
//! This module owns the wire format only: [`Value`] is the decoded tree,
//! [`decode`] / [`decode_prefix`] parse it and [`Value::encode`] writes it.
//! The ng command layer (cookies, `command`, `result`, ...) lives elsewhere.
//!
//! Compatibility notes:
//! - Dictionary keys need not be sorted (Kamailio and `OpenSIPS` do not always
//!   sort them). Order is kept, duplicate keys are allowed and
//!   [`Value::get`] returns the first match.
//! - Nesting is limited to [`MAX_DEPTH`] containers. The decoder uses an
//!   explicit stack, so hostile input such as `llllll…` cannot overflow the
//!   thread stack.
//! - The decoder never allocates more than the length of its input and never
//!   panics, whatever the input.

/// Maximum number of nested lists/dicts accepted by the decoder.
pub const MAX_DEPTH: usize = 32;

/// A decoded bencode value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Value {
    /// `i<digits>e`
    Int(i64),
    /// `<len>:<bytes>`; not necessarily UTF-8.
    Bytes(Vec<u8>),
    /// `l<values>e`
    List(Vec<Value>),
    /// `d<key><value>...e`, in wire (insertion) order; duplicates are kept.
    Dict(Vec<(Vec<u8>, Value)>),
}

/// Why a bencode input was rejected.
///
/// Small and `Copy` so the control path can return it cheaply; the
/// `Display` text is suitable for an ng `error-reason` reply.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// The input ended in the middle of a value (or was empty).
    #[error("truncated bencode input")]
    Truncated,
    /// An integer was empty, had a leading zero, was `-0`, contained a
    /// non-digit or does not fit in an `i64`.
    #[error("malformed bencode integer")]
    BadInteger,
    /// A string length had a leading zero, a non-digit or overflowed.
    #[error("malformed bencode string length")]
    BadLength,
    /// A byte that cannot start a value (or a dictionary key) here.
    #[error("unexpected byte at offset {pos} in bencode input")]
    UnexpectedByte {
        /// Offset of the offending byte in the input.
        pos: usize,
    },
    /// Containers nested deeper than [`MAX_DEPTH`].
    #[error("bencode nesting deeper than 32 levels")]
    TooDeep,
    /// Something other than whitespace followed the top-level value.
    #[error("trailing data after bencode value")]
    TrailingData,
}

/// Decodes exactly one value from `input`.
///
/// Trailing ASCII whitespace (for example the `"\n"` or `"\r\n"` some
/// clients append) is tolerated; any other trailing byte is
/// [`DecodeError::TrailingData`].
///
/// # Errors
///
/// Any [`DecodeError`]; see its variants.
pub fn decode(input: &[u8]) -> Result<Value, DecodeError> {
    decode_ref(input).map(|v| v.to_value())
}

/// [`decode`] into a [`ValueRef`] that borrows its strings from `input`.
///
/// # Errors
///
/// Those of [`decode`].
pub fn decode_ref(input: &[u8]) -> Result<ValueRef<'_>, DecodeError> {
    let (value, used) = decode_prefix_ref(input)?;
    let rest = input.get(used..).unwrap_or_default();
    if rest.iter().all(u8::is_ascii_whitespace) {
        Ok(value)
    } else {
        Err(DecodeError::TrailingData)
    }
}

/// A decoded value whose strings and keys borrow from the input: what a
/// server reads a command into, without copying every key and string.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ValueRef<'a> {
    /// `i<digits>e`
    Int(i64),
    /// `<len>:<bytes>`
    Bytes(&'a [u8]),
    /// `l<values>e`
    List(Vec<ValueRef<'a>>),
    /// `d<key><value>...e`, in wire order; duplicates are kept.
    Dict(Vec<(&'a [u8], ValueRef<'a>)>),
}

impl<'a> ValueRef<'a> {
    /// An owned copy.
    #[must_use]
    pub fn to_value(&self) -> Value {
        match self {
            ValueRef::Int(n) => Value::Int(*n),
            ValueRef::Bytes(b) => Value::Bytes(b.to_vec()),
            ValueRef::List(items) => Value::List(items.iter().map(ValueRef::to_value).collect()),
            ValueRef::Dict(entries) => Value::Dict(entries.iter().map(|(k, v)| (k.to_vec(), v.to_value())).collect()),
        }
    }

    /// As [`Value::get`].
    #[must_use]
    pub fn get(&self, key: &str) -> Option<&ValueRef<'a>> {
        match self {
            ValueRef::Dict(entries) => entries.iter().find(|(k, _)| *k == key.as_bytes()).map(|(_, v)| v),
            _ => None,
        }
    }

    /// As [`Value::as_bytes`].
    #[must_use]
    pub fn as_bytes(&self) -> Option<&'a [u8]> {
        match self {
            ValueRef::Bytes(b) => Some(b),
            _ => None,
        }
    }

    /// As [`Value::as_str`].
    #[must_use]
    pub fn as_str(&self) -> Option<&'a str> {
        std::str::from_utf8(self.as_bytes()?).ok()
    }

    /// As [`Value::as_int`].
    #[must_use]
    pub fn as_int(&self) -> Option<i64> {
        match self {
            ValueRef::Int(n) => Some(*n),
            _ => None,
        }
    }
}

impl<'a> From<&'a Value> for ValueRef<'a> {
    fn from(v: &'a Value) -> Self {
        match v {
            Value::Int(n) => ValueRef::Int(*n),
            Value::Bytes(b) => ValueRef::Bytes(b),
            Value::List(items) => ValueRef::List(items.iter().map(ValueRef::from).collect()),
            Value::Dict(entries) => {
                ValueRef::Dict(entries.iter().map(|(k, v)| (k.as_slice(), ValueRef::from(v))).collect())
            }
        }
    }
}

/// One open container on the decoder's explicit stack.
enum Frame<'a> {
    List(Vec<ValueRef<'a>>),
    /// Entries so far, and the key waiting for its value.
    Dict(Vec<(&'a [u8], ValueRef<'a>)>, Option<&'a [u8]>),
}

/// Decodes one value from the start of `input` and returns it with the
/// number of bytes it used. Bytes after the value are not examined.
///
/// # Errors
///
/// Any [`DecodeError`] except [`DecodeError::TrailingData`].
pub fn decode_prefix(input: &[u8]) -> Result<(Value, usize), DecodeError> {
    decode_prefix_ref(input).map(|(v, n)| (v.to_value(), n))
}

/// [`decode_prefix`] into a [`ValueRef`].
///
/// # Errors
///
/// Those of [`decode_prefix`].
pub fn decode_prefix_ref(input: &[u8]) -> Result<(ValueRef<'_>, usize), DecodeError> {
    let mut stack: Vec<Frame<'_>> = Vec::new();
    let mut pos = 0usize;
    loop {
        let byte = *input.get(pos).ok_or(DecodeError::Truncated)?;

        // A dictionary waiting for a key accepts only a byte string or `e`.
        if let Some(Frame::Dict(_, None)) = stack.last() {
            if byte.is_ascii_digit() {
                let (key, next) = parse_bytes(input, pos)?;
                if let Some(Frame::Dict(_, slot)) = stack.last_mut() {
                    *slot = Some(key);
                }
                pos = next;
                continue;
            }
            if byte != b'e' {
                return Err(DecodeError::UnexpectedByte { pos });
            }
        }

        let value = match byte {
            b'e' => match stack.pop() {
                Some(Frame::List(items)) => ValueRef::List(items),
                Some(Frame::Dict(entries, None)) => ValueRef::Dict(entries),
                // `e` where a value (or the top-level value) was expected.
                Some(Frame::Dict(_, Some(_))) | None => return Err(DecodeError::UnexpectedByte { pos }),
            },
            b'i' => {
                let (n, next) = parse_int(input, pos)?;
                pos = next;
                ValueRef::Int(n)
            }
            b'0'..=b'9' => {
                let (bytes, next) = parse_bytes(input, pos)?;
                pos = next;
                ValueRef::Bytes(bytes)
            }
            b'l' | b'd' => {
                if stack.len() >= MAX_DEPTH {
                    return Err(DecodeError::TooDeep);
                }
                stack.push(if byte == b'l' { Frame::List(Vec::new()) } else { Frame::Dict(Vec::new(), None) });
                pos += 1;
                continue;
            }
            _ => return Err(DecodeError::UnexpectedByte { pos }),
        };
        if byte == b'e' {
            pos += 1;
        }

        match stack.last_mut() {
            None => return Ok((value, pos)),
            Some(Frame::List(items)) => items.push(value),
            Some(Frame::Dict(entries, key)) => match key.take() {
                Some(k) => entries.push((k, value)),
                // Not reachable: keys are consumed above. Reject rather than panic.
                None => return Err(DecodeError::UnexpectedByte { pos }),
            },
        }
    }
}

/// Parses `i<digits>e` starting at `start` (which holds the `i`).
/// Returns the integer and the offset just past the `e`.
fn parse_int(input: &[u8], start: usize) -> Result<(i64, usize), DecodeError> {
    let mut pos = start + 1;
    let negative = input.get(pos) == Some(&b'-');
    if negative {
        pos += 1;
    }
    let mut acc: i64 = 0;
    let mut digits = 0usize;
    let mut first_is_zero = false;
    loop {
        match input.get(pos) {
            None => return Err(DecodeError::Truncated),
            Some(b'e') => break,
            Some(&b @ b'0'..=b'9') => {
                if digits == 0 {
                    first_is_zero = b == b'0';
                } else if first_is_zero {
                    return Err(DecodeError::BadInteger);
                }
                let d = i64::from(b - b'0');
                // Accumulate towards the sign so that i64::MIN is reachable.
                acc = acc
                    .checked_mul(10)
                    .and_then(|a| if negative { a.checked_sub(d) } else { a.checked_add(d) })
                    .ok_or(DecodeError::BadInteger)?;
                digits += 1;
                pos += 1;
            }
            Some(_) => return Err(DecodeError::BadInteger),
        }
    }
    if digits == 0 || (negative && first_is_zero) {
        return Err(DecodeError::BadInteger);
    }
    Ok((acc, pos + 1))
}

/// Parses `<len>:<bytes>` starting at `start` (which holds a digit).
/// Returns the borrowed bytes and the offset just past them.
fn parse_bytes(input: &[u8], start: usize) -> Result<(&[u8], usize), DecodeError> {
    let mut pos = start;
    let mut len = 0usize;
    let mut digits = 0usize;
    let mut first_is_zero = false;
    loop {
        match input.get(pos) {
            None => return Err(DecodeError::Truncated),
            Some(b':') => break,
            Some(&b @ b'0'..=b'9') => {
                if digits == 0 {
                    first_is_zero = b == b'0';
                } else if first_is_zero {
                    return Err(DecodeError::BadLength);
                }
                len = len
                    .checked_mul(10)
                    .and_then(|l| l.checked_add(usize::from(b - b'0')))
                    .ok_or(DecodeError::BadLength)?;
                digits += 1;
                pos += 1;
            }
            Some(_) => return Err(DecodeError::BadLength),
        }
    }
    if digits == 0 {
        return Err(DecodeError::BadLength);
    }
    let data_start = pos + 1;
    let data_end = data_start.checked_add(len).ok_or(DecodeError::BadLength)?;
    let bytes = input.get(data_start..data_end).ok_or(DecodeError::Truncated)?;
    Ok((bytes, data_end))
}

/// Appends the decimal form of `n` without allocating.
fn put_u64(out: &mut Vec<u8>, mut n: u64) {
    let mut buf = [0u8; 20];
    let mut used = 0usize;
    for slot in buf.iter_mut().rev() {
        *slot = b'0' + (n % 10) as u8;
        n /= 10;
        used += 1;
        if n == 0 {
            break;
        }
    }
    out.extend_from_slice(buf.get(buf.len() - used..).unwrap_or_default());
}

fn put_bytes(out: &mut Vec<u8>, bytes: &[u8]) {
    put_u64(out, bytes.len() as u64);
    out.push(b':');
    out.extend_from_slice(bytes);
}

/// Appends `<len>:<bytes>`: a byte string, or a dictionary key, written
/// straight to `out` (for encoders that do not build a [`Value`]).
pub fn write_bytes(out: &mut Vec<u8>, bytes: &[u8]) {
    put_bytes(out, bytes);
}

/// Appends `i<n>e`.
pub fn write_int(out: &mut Vec<u8>, n: i64) {
    out.push(b'i');
    if n < 0 {
        out.push(b'-');
    }
    put_u64(out, n.unsigned_abs());
    out.push(b'e');
}

/// Appends `i<n>e`, saturating at `i64::MAX` as `Value::from(u64)` does.
pub fn write_uint(out: &mut Vec<u8>, n: u64) {
    write_int(out, i64::try_from(n).unwrap_or(i64::MAX));
}

impl Value {
    /// Appends the bencoded form of `self` to `out`. Dictionaries are
    /// written in insertion order.
    pub fn encode(&self, out: &mut Vec<u8>) {
        match self {
            Value::Int(n) => write_int(out, *n),
            Value::Bytes(b) => put_bytes(out, b),
            Value::List(items) => {
                out.push(b'l');
                for item in items {
                    item.encode(out);
                }
                out.push(b'e');
            }
            Value::Dict(entries) => {
                out.push(b'd');
                for (k, v) in entries {
                    put_bytes(out, k);
                    v.encode(out);
                }
                out.push(b'e');
            }
        }
    }

    /// Returns the bencoded form of `self` in a new buffer.
    #[must_use]
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::new();
        self.encode(&mut out);
        out
    }

    /// Dictionary lookup: the value of the first entry whose key equals
    /// `key`. `None` if there is no such key or `self` is not a dict.
    #[must_use]
    pub fn get(&self, key: &str) -> Option<&Value> {
        self.as_dict()?.iter().find(|(k, _)| k.as_slice() == key.as_bytes()).map(|(_, v)| v)
    }

    /// The bytes of a [`Value::Bytes`].
    #[must_use]
    pub fn as_bytes(&self) -> Option<&[u8]> {
        match self {
            Value::Bytes(b) => Some(b),
            _ => None,
        }
    }

    /// The text of a [`Value::Bytes`] that holds valid UTF-8.
    #[must_use]
    pub fn as_str(&self) -> Option<&str> {
        std::str::from_utf8(self.as_bytes()?).ok()
    }

    /// The integer of a [`Value::Int`].
    #[must_use]
    pub fn as_int(&self) -> Option<i64> {
        match self {
            Value::Int(n) => Some(*n),
            _ => None,
        }
    }

    /// The items of a [`Value::List`].
    #[must_use]
    pub fn as_list(&self) -> Option<&[Value]> {
        match self {
            Value::List(items) => Some(items),
            _ => None,
        }
    }

    /// The entries of a [`Value::Dict`], in insertion order.
    #[must_use]
    pub fn as_dict(&self) -> Option<&[(Vec<u8>, Value)]> {
        match self {
            Value::Dict(entries) => Some(entries),
            _ => None,
        }
    }

    /// A byte string holding the UTF-8 of `s`.
    #[must_use]
    pub fn str(s: &str) -> Value {
        Value::Bytes(s.as_bytes().to_vec())
    }

    /// An empty dictionary.
    #[must_use]
    pub fn dict() -> Value {
        Value::Dict(Vec::new())
    }

    /// On a dict: replaces the value of the first entry with key `key`, or
    /// appends a new entry. Does nothing on other variants. Returns `self`
    /// for chaining.
    pub fn insert(&mut self, key: &str, v: Value) -> &mut Self {
        if let Value::Dict(entries) = self {
            match entries.iter_mut().find(|(k, _)| k.as_slice() == key.as_bytes()) {
                Some((_, slot)) => *slot = v,
                None => entries.push((key.as_bytes().to_vec(), v)),
            }
        }
        self
    }
}

impl From<i64> for Value {
    fn from(n: i64) -> Self {
        Value::Int(n)
    }
}

/// Values above `i64::MAX` saturate to `i64::MAX`.
impl From<u64> for Value {
    fn from(n: u64) -> Self {
        Value::Int(i64::try_from(n).unwrap_or(i64::MAX))
    }
}

impl From<&str> for Value {
    fn from(s: &str) -> Self {
        Value::str(s)
    }
}

impl From<String> for Value {
    fn from(s: String) -> Self {
        Value::Bytes(s.into_bytes())
    }
}

impl From<Vec<u8>> for Value {
    fn from(b: Vec<u8>) -> Self {
        Value::Bytes(b)
    }
}

impl From<Vec<Value>> for Value {
    fn from(items: Vec<Value>) -> Self {
        Value::List(items)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn d(input: &[u8]) -> Result<Value, DecodeError> {
        decode(input)
    }

    #[test]
    fn scalars() {
        assert_eq!(d(b"i0e"), Ok(Value::Int(0)));
        assert_eq!(d(b"i42e"), Ok(Value::Int(42)));
        assert_eq!(d(b"i-42e"), Ok(Value::Int(-42)));
        assert_eq!(d(b"i9223372036854775807e"), Ok(Value::Int(i64::MAX)));
        assert_eq!(d(b"i-9223372036854775808e"), Ok(Value::Int(i64::MIN)));
        assert_eq!(d(b"0:"), Ok(Value::Bytes(Vec::new())));
        assert_eq!(d(b"4:spam"), Ok(Value::str("spam")));
        assert_eq!(d(b"3:\x00\xff\n"), Ok(Value::Bytes(vec![0, 0xff, b'\n'])));
    }

    #[test]
    fn containers_keep_order_and_duplicates() {
        let v = d(b"d1:bi1e1:al1:xi2eee").expect("valid");
        let dict = v.as_dict().expect("dict");
        assert_eq!(dict[0].0, b"b");
        assert_eq!(dict[1].0, b"a");
        assert_eq!(v.to_bytes(), b"d1:bi1e1:al1:xi2eee");

        let dup = d(b"d1:ki1e1:ki2ee").expect("valid");
        assert_eq!(dup.get("k"), Some(&Value::Int(1)));
        assert_eq!(dup.as_dict().map(<[_]>::len), Some(2));
        assert_eq!(d(b"le"), Ok(Value::List(Vec::new())));
        assert_eq!(d(b"de"), Ok(Value::dict()));
    }

    #[test]
    fn trailing_whitespace_and_prefix() {
        assert_eq!(d(b"i1e\n"), Ok(Value::Int(1)));
        assert_eq!(d(b"i1e\r\n"), Ok(Value::Int(1)));
        assert_eq!(d(b"i1e x"), Err(DecodeError::TrailingData));
        assert_eq!(d(b"i1ei2e"), Err(DecodeError::TrailingData));
        assert_eq!(decode_prefix(b"4:spamXYZ"), Ok((Value::str("spam"), 6)));
    }

    #[test]
    fn every_error_kind() {
        use DecodeError::*;
        assert_eq!(d(b""), Err(Truncated));
        assert_eq!(d(b"i12"), Err(Truncated));
        assert_eq!(d(b"5:abc"), Err(Truncated));
        assert_eq!(d(b"12"), Err(Truncated));
        assert_eq!(d(b"l"), Err(Truncated));
        assert_eq!(d(b"d3:key"), Err(Truncated));
        assert_eq!(d(b"ie"), Err(BadInteger));
        assert_eq!(d(b"i-e"), Err(BadInteger));
        assert_eq!(d(b"i-0e"), Err(BadInteger));
        assert_eq!(d(b"i03e"), Err(BadInteger));
        assert_eq!(d(b"i-03e"), Err(BadInteger));
        assert_eq!(d(b"i1x2e"), Err(BadInteger));
        assert_eq!(d(b"i9223372036854775808e"), Err(BadInteger));
        assert_eq!(d(b"i-9223372036854775809e"), Err(BadInteger));
        assert_eq!(d(b"01:a"), Err(BadLength));
        assert_eq!(d(b"1x:a"), Err(BadLength));
        assert_eq!(d(b"99999999999999999999999:a"), Err(BadLength));
        assert_eq!(d(b"18446744073709551615:a"), Err(BadLength));
        assert_eq!(d(b"1000:a"), Err(Truncated));
        assert_eq!(d(b"x"), Err(UnexpectedByte { pos: 0 }));
        assert_eq!(d(b"e"), Err(UnexpectedByte { pos: 0 }));
        assert_eq!(d(b"li1e?e"), Err(UnexpectedByte { pos: 4 }));
        assert_eq!(d(b"di1ei2ee"), Err(UnexpectedByte { pos: 1 }));
        assert_eq!(d(b"d1:ke"), Err(UnexpectedByte { pos: 4 }));
        assert_eq!(d(b"4:spamx"), Err(TrailingData));
        let deep = [b'l'; 33];
        assert_eq!(d(&deep), Err(TooDeep));
    }

    #[test]
    fn error_messages_are_readable() {
        assert_eq!(DecodeError::UnexpectedByte { pos: 7 }.to_string(), "unexpected byte at offset 7 in bencode input");
        assert_eq!(DecodeError::Truncated.to_string(), "truncated bencode input");
    }

    #[test]
    fn depth_limit() {
        let mut ok = vec![b'l'; MAX_DEPTH];
        ok.extend(std::iter::repeat_n(b'e', MAX_DEPTH));
        let mut v = d(&ok).expect("32 levels are allowed");
        let mut levels = 1;
        while let Some([inner]) = v.as_list() {
            v = inner.clone();
            levels += 1;
        }
        assert_eq!(levels, MAX_DEPTH);

        let mut too_deep = vec![b'd'; 1];
        too_deep.extend(std::iter::repeat_n(b"1:kl".as_slice(), MAX_DEPTH).flatten());
        assert_eq!(d(&too_deep), Err(DecodeError::TooDeep));

        // A huge run of `l` must neither recurse nor allocate per byte.
        let hostile = vec![b'l'; 1_000_000];
        assert_eq!(d(&hostile), Err(DecodeError::TooDeep));
    }

    #[test]
    fn kamailio_offer() {
        let sdp = "v=0\r\no=- 1 1 IN IP4 192.0.2.10\r\ns=-\r\nc=IN IP4 192.0.2.10\r\nt=0 0\r\nm=audio 30000 RTP/AVP 0 8 101\r\n";
        let b = |s: &str| format!("{}:{s}", s.len());
        let msg = format!(
            "d{}{}{}{}{}{}{}l{}{}e{}l{}{}e{}{}{}{}{}l{}{}ee",
            b("command"),
            b("offer"),
            b("call-id"),
            b("a84b4c76e66710@pc33.atla"),
            b("from-tag"),
            b("192830174"),
            b("flags"),
            b("trust-address"),
            b("SIP-source-address"),
            b("replace"),
            b("origin"),
            b("session-connection"),
            b("ICE"),
            b("remove"),
            b("sdp"),
            b(sdp),
            b("received-from"),
            b("IP4"),
            b("203.0.113.5"),
        );
        assert!(msg.starts_with("d7:command5:offer7:call-id24:a84b4c76e66710@pc33.atla8:from-tag9:192830174"));
        let msg = msg.into_bytes();
        let v = decode(&msg).expect("valid offer");
        assert_eq!(v.get("command").and_then(Value::as_str), Some("offer"));
        assert_eq!(v.get("call-id").and_then(Value::as_str), Some("a84b4c76e66710@pc33.atla"));
        assert_eq!(v.get("from-tag").and_then(Value::as_str), Some("192830174"));
        assert_eq!(v.get("ICE").and_then(Value::as_str), Some("remove"));
        assert_eq!(v.get("sdp").and_then(Value::as_bytes), Some(sdp.as_bytes()));
        let flags: Vec<&str> =
            v.get("flags").and_then(Value::as_list).expect("flags list").iter().filter_map(Value::as_str).collect();
        assert_eq!(flags, ["trust-address", "SIP-source-address"]);
        assert_eq!(v.get("missing"), None);
        // Unsorted keys re-encode byte for byte.
        assert_eq!(v.to_bytes(), msg);
    }

    #[test]
    fn builders_and_accessors() {
        let mut reply = Value::dict();
        reply
            .insert("result", "ok".into())
            .insert("sdp", Value::str("v=0"))
            .insert("result", Value::from("error"))
            .insert("count", 3u64.into())
            .insert("big", u64::MAX.into())
            .insert("list", vec![Value::from(-1i64), Value::from(String::from("x"))].into());
        assert_eq!(reply.to_bytes(), b"d6:result5:error3:sdp3:v=05:counti3e3:bigi9223372036854775807e4:listli-1e1:xee");
        assert_eq!(reply.get("count").and_then(Value::as_int), Some(3));
        let mut not_dict = Value::Int(1);
        not_dict.insert("k", Value::Int(2));
        assert_eq!(not_dict, Value::Int(1));
        assert_eq!(not_dict.get("k"), None);
        assert_eq!(Value::Bytes(vec![0xff]).as_str(), None);
        assert_eq!(Value::from(vec![1u8, 2]).as_bytes(), Some(&[1u8, 2][..]));
        assert_eq!(Value::Int(5).as_list(), None);
        assert_eq!(Value::Int(5).as_bytes(), None);
        assert_eq!(Value::str("a").as_int(), None);
    }

    fn arb_value() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            any::<i64>().prop_map(Value::Int),
            proptest::collection::vec(any::<u8>(), 0..16).prop_map(Value::Bytes),
        ];
        leaf.prop_recursive(6, 64, 6, |inner| {
            prop_oneof![
                proptest::collection::vec(inner.clone(), 0..6).prop_map(Value::List),
                proptest::collection::vec((proptest::collection::vec(any::<u8>(), 0..8), inner), 0..6)
                    .prop_map(Value::Dict),
            ]
        })
    }

    proptest! {
        #[test]
        fn decode_never_panics(input in proptest::collection::vec(any::<u8>(), 0..256)) {
            let _ = decode(&input);
            let _ = decode_prefix(&input);
        }

        #[test]
        fn decode_never_panics_on_bencode_like(
            input in proptest::collection::vec(
                prop_oneof![Just(b'i'), Just(b'l'), Just(b'd'), Just(b'e'), Just(b':'),
                            Just(b'-'), Just(b'0'), Just(b'1'), Just(b'9'), any::<u8>()],
                0..128)
        ) {
            if let Ok((v, used)) = decode_prefix(&input) {
                // Whatever decodes re-encodes to the bytes it came from.
                let bytes = v.to_bytes();
                prop_assert_eq!(Some(bytes.as_slice()), input.get(..used));
            }
        }

        #[test]
        fn round_trip(v in arb_value()) {
            let bytes = v.to_bytes();
            prop_assert_eq!(decode(&bytes), Ok(v));
        }
    }
}
