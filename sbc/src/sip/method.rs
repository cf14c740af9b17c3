//! SIP request methods.

use std::fmt;
use std::str::FromStr;

use super::error::ParseError;
use super::scan::is_token;

/// A request method. Methods are case-sensitive (RFC 3261 7.1): `invite` is
/// an extension method, not INVITE.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Method {
    /// INVITE (RFC 3261).
    Invite,
    /// ACK (RFC 3261).
    Ack,
    /// BYE (RFC 3261).
    Bye,
    /// CANCEL (RFC 3261).
    Cancel,
    /// REGISTER (RFC 3261).
    Register,
    /// OPTIONS (RFC 3261).
    Options,
    /// INFO (RFC 6086).
    Info,
    /// UPDATE (RFC 3311).
    Update,
    /// PRACK (RFC 3262).
    Prack,
    /// SUBSCRIBE (RFC 6665).
    Subscribe,
    /// NOTIFY (RFC 6665).
    Notify,
    /// REFER (RFC 3515).
    Refer,
    /// MESSAGE (RFC 3428).
    Message,
    /// PUBLISH (RFC 3903).
    Publish,
    /// Any other method token, as written.
    Other(String),
}

impl Method {
    /// The method as written on the wire.
    #[must_use]
    pub fn as_str(&self) -> &str {
        match self {
            Self::Invite => "INVITE",
            Self::Ack => "ACK",
            Self::Bye => "BYE",
            Self::Cancel => "CANCEL",
            Self::Register => "REGISTER",
            Self::Options => "OPTIONS",
            Self::Info => "INFO",
            Self::Update => "UPDATE",
            Self::Prack => "PRACK",
            Self::Subscribe => "SUBSCRIBE",
            Self::Notify => "NOTIFY",
            Self::Refer => "REFER",
            Self::Message => "MESSAGE",
            Self::Publish => "PUBLISH",
            Self::Other(s) => s,
        }
    }
}

impl fmt::Display for Method {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Method {
    type Err = ParseError;

    /// Parses a method token; fails with [`ParseError::Syntax`] if `s` is not
    /// a token.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(match s {
            "INVITE" => Self::Invite,
            "ACK" => Self::Ack,
            "BYE" => Self::Bye,
            "CANCEL" => Self::Cancel,
            "REGISTER" => Self::Register,
            "OPTIONS" => Self::Options,
            "INFO" => Self::Info,
            "UPDATE" => Self::Update,
            "PRACK" => Self::Prack,
            "SUBSCRIBE" => Self::Subscribe,
            "NOTIFY" => Self::Notify,
            "REFER" => Self::Refer,
            "MESSAGE" => Self::Message,
            "PUBLISH" => Self::Publish,
            _ if is_token(s) => Self::Other(s.to_owned()),
            _ => return Err(ParseError::Syntax("method")),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_case() {
        for m in ["INVITE", "ACK", "PRACK", "PUBLISH", "RE%47IST%45R"] {
            let parsed: Method = m.parse().unwrap();
            assert_eq!(parsed.to_string(), m);
        }
        assert_eq!("invite".parse::<Method>().unwrap(), Method::Other("invite".into()));
        assert!("IN VITE".parse::<Method>().is_err());
        assert!("".parse::<Method>().is_err());
    }
}
