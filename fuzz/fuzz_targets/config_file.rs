//! The client's config file parser (`config::ConfigFile::parse`) and profile
//! selection: never a panic, whatever the file holds.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sft::config::ConfigFile;

fuzz_target!(|data: &[u8]| {
    let Ok(s) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(c) = ConfigFile::parse(s, "config.toml") {
        let _ = c.select(None);
        for name in c.profiles.keys() {
            assert!(matches!(c.select(Some(name)), Ok(Some(_))));
        }
        let _ = c.select(Some("no such profile"));
    }
});
