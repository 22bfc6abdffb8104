//! Client keys: sources, the strong-key policy, digests, key files and `Secret`.
//! Declarations and re-exports only; each file below has one job.

mod expiry;
pub mod file;
mod policy;
mod secret;
mod set;
mod tenancy;

pub use expiry::parse_rfc3339;
pub use policy::{
    check_strength, is_token68, Alphabet, WeakKey, MAX_RUN, MIN_DISTINCT_CHARS, MIN_ENTROPY_BITS,
    MIN_KEY_LEN,
};
pub use secret::Secret;
pub use set::{
    digest, encode_key, generate, is_key_name, load, ClientKey, Env, KeyDigest, KeyEntry, KeyError,
    KeySet, ProcessEnv,
};
pub use tenancy::{KeyOrigin, KeyPolicy, KeyRefusal, KeySettings, PolicyText};

#[cfg(test)]
mod tests;
