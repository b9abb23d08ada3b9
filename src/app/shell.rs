//! `sft shell`: an interactive session over one connection.

use crate::client::Client;
use crate::error::{Error, Result};

/// Run the shell on an open session until `exit` or end of input.
pub async fn run(_c: &mut Client) -> Result<()> {
    Err(Error::usage("sft shell is not available yet"))
}
