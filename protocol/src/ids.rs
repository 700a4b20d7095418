//! Validated identifier newtypes.
//!
//! Every id is 1 to [`ID_LEN_MAX`] characters from `A-Z a-z 0-9 . _ : -`. The rule is the
//! same for every id so that ids can be used verbatim in URLs, file names, SQL keys and log
//! lines without escaping.

use alloc::string::String;
use core::fmt;

use serde::{Deserialize, Serialize};

/// Longest accepted identifier, in bytes.
pub const ID_LEN_MAX: usize = 64;

/// Why a string is not a valid identifier.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum IdError {
    /// The id is the empty string.
    #[error("must not be empty")]
    Empty,
    /// The id is longer than [`ID_LEN_MAX`].
    #[error("longer than {ID_LEN_MAX} characters")]
    TooLong,
    /// The id holds a character outside `A-Z a-z 0-9 . _ : -`.
    #[error("contains a character other than A-Z a-z 0-9 . _ : -")]
    BadCharacter,
}

/// Checks the identifier rule shared by every id type.
pub fn check_id(s: &str) -> Result<(), IdError> {
    if s.is_empty() {
        return Err(IdError::Empty);
    }
    if s.len() > ID_LEN_MAX {
        return Err(IdError::TooLong);
    }
    if !s
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b':' | b'-'))
    {
        return Err(IdError::BadCharacter);
    }
    Ok(())
}

macro_rules! id_type {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Deserialize)]
        #[serde(try_from = "String")]
        pub struct $name(String);

        /// Serialized as its text, without the copy `into = "String"` would make.
        impl Serialize for $name {
            fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                serializer.serialize_str(&self.0)
            }
        }

        impl $name {
            /// Validates `s` as an identifier.
            pub fn new(s: impl Into<String>) -> Result<Self, IdError> {
                let s = s.into();
                check_id(&s)?;
                Ok(Self(s))
            }

            /// The identifier as text.
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl TryFrom<String> for $name {
            type Error = IdError;
            fn try_from(s: String) -> Result<Self, IdError> {
                Self::new(s)
            }
        }

        impl From<$name> for String {
            fn from(id: $name) -> String {
                id.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}({:?})", stringify!($name), self.0)
            }
        }

        impl core::str::FromStr for $name {
            type Err = IdError;
            fn from_str(s: &str) -> Result<Self, IdError> {
                Self::new(s)
            }
        }
    };
}

id_type!(
    /// A tenant: one retail chain or business. Every row and every key starts with it.
    TenantId
);
id_type!(
    /// A store of a tenant.
    StoreId
);
id_type!(
    /// A device: one installed edge agent (or a firmware bridge) of a store.
    DeviceId
);
id_type!(
    /// A POS register (till) of a store.
    RegisterId
);
id_type!(
    /// The POS's transaction id: the idempotency key of a sale, unique per tenant.
    TransactionId
);
id_type!(
    /// A stock-keeping unit (the POS's `itemId`).
    Sku
);
id_type!(
    /// The id of a scanner event, minted by the scanner or the bridge.
    ScanId
);
id_type!(
    /// The id of a stock adjustment or transfer leg.
    AdjustmentId
);
id_type!(
    /// The id of an alert.
    AlertId
);

#[cfg(test)]
mod tests {
    use super::*;

    fn check(s: &str, expected: Result<(), IdError>) {
        assert_eq!(check_id(s), expected, "{s:?}");
    }

    #[test]
    fn id_rules() {
        check("store-042", Ok(()));
        check("a.b_c:d-E9", Ok(()));
        check("", Err(IdError::Empty));
        check(&"x".repeat(ID_LEN_MAX), Ok(()));
        check(&"x".repeat(ID_LEN_MAX + 1), Err(IdError::TooLong));
        check("has space", Err(IdError::BadCharacter));
        check("caf\u{e9}", Err(IdError::BadCharacter));
        check("a/b", Err(IdError::BadCharacter));
    }

    #[test]
    fn deserializing_validates() {
        let bytes = postcard::to_allocvec(&String::from("bad id")).unwrap();
        assert!(postcard::from_bytes::<StoreId>(&bytes).is_err());
        let bytes = postcard::to_allocvec(&String::from("good")).unwrap();
        assert_eq!(
            postcard::from_bytes::<StoreId>(&bytes).unwrap().as_str(),
            "good"
        );
    }
}
