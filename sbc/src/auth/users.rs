//! The users file: one line per user and realm holding the HA1 hashes
//! (`H(user:realm:password)`) for MD5 and SHA-256, never a clear password.
//!
//! ```text
//! # user:realm:md5-ha1:sha256-ha1   (either hash may be empty)
//! alice:example.com:0f1c...:9a3e...
//! ```
//!
//! `sbc passwd` prints such a line ([`line_for`]). The table is read at
//! start and again on SIGHUP; a file that does not parse is reported with
//! its line number and the old table stays.

use std::collections::HashMap;
use std::path::Path;

use super::digest::{ha1, Algorithm};

/// The hashes of one user in one realm.
#[derive(Clone, PartialEq, Eq)]
pub struct UserHashes {
    /// MD5 HA1 (32 hex digits), when given.
    pub md5: Option<String>,
    /// SHA-256 HA1 (64 hex digits), when given.
    pub sha256: Option<String>,
}

impl UserHashes {
    /// The HA1 for `alg`, when the file has it.
    #[must_use]
    pub fn ha1(&self, alg: Algorithm) -> Option<&str> {
        match alg {
            Algorithm::Md5 => self.md5.as_deref(),
            Algorithm::Sha256 => self.sha256.as_deref(),
        }
    }
}

/// The users of one realm, by user name.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Users {
    by_name: HashMap<String, UserHashes>,
    /// Lines for other realms, skipped.
    pub other_realms: usize,
}

impl std::fmt::Debug for Users {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the hashes.
        write!(f, "Users({} users)", self.by_name.len())
    }
}

/// A users file line that does not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("line {line}: {problem}")]
pub struct UsersError {
    /// 1-based line number (0: the file could not be read).
    pub line: usize,
    /// What is wrong.
    pub problem: String,
}

fn is_hex(s: &str, len: usize) -> bool {
    s.len() == len && s.bytes().all(|b| b.is_ascii_hexdigit())
}

impl Users {
    /// Parses the text of a users file, keeping the lines of `realm`.
    ///
    /// # Errors
    /// The first bad line, by number.
    pub fn parse(text: &str, realm: &str) -> Result<Self, UsersError> {
        let mut users = Self::default();
        for (i, raw) in text.lines().enumerate() {
            let line = raw.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let bad = |problem: &str| UsersError { line: i + 1, problem: problem.to_owned() };
            let f: Vec<&str> = line.split(':').collect();
            let [user, r, md5, sha] = f[..] else {
                return Err(bad("want user:realm:md5-ha1:sha256-ha1"));
            };
            if user.is_empty() || r.is_empty() {
                return Err(bad("empty user or realm"));
            }
            if !md5.is_empty() && !is_hex(md5, 32) {
                return Err(bad("the MD5 HA1 is not 32 hex digits"));
            }
            if !sha.is_empty() && !is_hex(sha, 64) {
                return Err(bad("the SHA-256 HA1 is not 64 hex digits"));
            }
            if md5.is_empty() && sha.is_empty() {
                return Err(bad("no hash"));
            }
            if r != realm {
                users.other_realms += 1;
                continue;
            }
            let h = UserHashes {
                md5: (!md5.is_empty()).then(|| md5.to_ascii_lowercase()),
                sha256: (!sha.is_empty()).then(|| sha.to_ascii_lowercase()),
            };
            if users.by_name.insert(user.to_owned(), h).is_some() {
                return Err(bad(&format!("user `{user}` appears twice in realm `{r}`")));
            }
        }
        Ok(users)
    }

    /// Reads and parses a users file.
    ///
    /// # Errors
    /// Unreadable file (line 0) or the first bad line.
    pub fn load(path: &Path, realm: &str) -> Result<Self, UsersError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| UsersError { line: 0, problem: format!("reading {}: {e}", path.display()) })?;
        Self::parse(&text, realm)
    }

    /// The hashes of `user`.
    #[must_use]
    pub fn get(&self, user: &str) -> Option<&UserHashes> {
        self.by_name.get(user)
    }

    /// How many users.
    #[must_use]
    pub fn len(&self) -> usize {
        self.by_name.len()
    }

    /// Whether there are none.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.by_name.is_empty()
    }
}

/// The users file line for `user` in `realm` with `password`.
#[must_use]
pub fn line_for(user: &str, realm: &str, password: &str) -> String {
    format!(
        "{user}:{realm}:{}:{}",
        ha1(Algorithm::Md5, user, realm, password),
        ha1(Algorithm::Sha256, user, realm, password)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_round_trip_and_errors_have_line_numbers() {
        let text = format!(
            "# users\n\n{}\n{}\nbob:other.net:{}:\n",
            line_for("alice", "example.com", "secret"),
            line_for("carol", "example.com", "pw"),
            "0".repeat(32)
        );
        let u = Users::parse(&text, "example.com").unwrap();
        assert_eq!((u.len(), u.other_realms), (2, 1));
        let a = u.get("alice").unwrap();
        assert_eq!(a.ha1(Algorithm::Md5).unwrap(), ha1(Algorithm::Md5, "alice", "example.com", "secret"));
        assert_eq!(a.ha1(Algorithm::Sha256).unwrap(), ha1(Algorithm::Sha256, "alice", "example.com", "secret"));
        assert!(u.get("bob").is_none(), "another realm's line");
        assert!(!format!("{u:?}").contains(a.md5.as_deref().unwrap()), "Debug never shows hashes");
        for (bad, line, words) in [
            ("alice:example.com:secret\n", 1, "want user:realm"),
            ("# c\nalice:example.com:abc:\n", 2, "32 hex"),
            ("alice:example.com::\n", 1, "no hash"),
            ("alice:example.com::zz\n", 1, "64 hex"),
        ] {
            let e = Users::parse(bad, "example.com").unwrap_err();
            assert_eq!(e.line, line, "{bad}");
            assert!(e.to_string().contains(words), "{e}");
        }
        let twice = format!("{0}\n{0}\n", line_for("alice", "r", "x"));
        assert_eq!(Users::parse(&twice, "r").unwrap_err().line, 2);
    }
}
