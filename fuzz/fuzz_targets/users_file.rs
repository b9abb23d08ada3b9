//! The server's users file parser (`server::users::UsersFile::parse`): a
//! file an administrator edits by hand. Anything it accepts has valid user
//! names, roles and digests.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sft::server::users::UsersFile;

fuzz_target!(|data: &[u8]| {
    let Ok(s) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(f) = UsersFile::parse(s, "users.toml") {
        for (name, u) in &f.users {
            assert!(sft::server::users::validate_name(name).is_ok());
            assert!(u.role().is_ok());
            assert!(u.digest().is_ok());
        }
    }
});
