//! One command, from the frame read to its handler: where an ATTRS belongs,
//! the role the command needs, and the order its reply must keep.

use super::*;

/// Whether the session goes on after a command.
pub(super) enum Flow {
    Next,
    End,
}

/// What an incoming message does to a pending ATTRS (PROTOCOL.md §5b: an
/// ATTRS belongs to the PUT or CLONE right after it).
#[derive(Debug, PartialEq)]
pub(super) enum Placed {
    /// The message is an ATTRS: hold it for the next command.
    Hold(Attrs),
    /// Go on with the message, with the ATTRS it carries (if any).
    Go(Option<Attrs>),
    /// A protocol violation, with why.
    Misplaced(String),
}

/// Pure: `pending` is the ATTRS held from the message before, `meta`
/// whether ATTRS was negotiated.
pub(super) fn place_attrs(meta: bool, pending: Option<Attrs>, msg: &Msg) -> Placed {
    match (msg, pending) {
        (Msg::Attrs { .. }, _) if !meta => Placed::Misplaced(
            "ATTRS was not negotiated for this session (FEATURE_META)".to_string(),
        ),
        (Msg::Attrs { .. }, Some(_)) => Placed::Misplaced(
            "ATTRS must be followed by PUT or CLONE, not by another ATTRS".to_string(),
        ),
        (Msg::Attrs { mode, mtime_ns }, None) => Placed::Hold(Attrs {
            mode: *mode,
            mtime_ns: *mtime_ns,
        }),
        (Msg::Put { .. } | Msg::Clone { .. }, a) => Placed::Go(a),
        (_, None) => Placed::Go(None),
        (other, Some(_)) => Placed::Misplaced(format!(
            "ATTRS must be followed by PUT or CLONE, not by {}",
            other.name()
        )),
    }
}

impl Session {
    /// Check and run one command.
    pub(super) async fn dispatch(&mut self, msg: Msg) -> Result<Flow> {
        let attrs = match place_attrs(self.meta, self.attrs.take(), &msg) {
            Placed::Hold(a) => {
                self.attrs = Some(a);
                return Ok(Flow::Next);
            }
            Placed::Go(a) => a,
            Placed::Misplaced(why) => {
                // the replies to earlier commands go first
                self.drain_all().await?;
                return Err(Error::protocol(why));
            }
        };
        let who = self.refresh_identity()?;
        if let Some(need) = super::super::policy::required(&msg)
            && let Err(e) = who.require(need.role, need.op)
        {
            self.drain_all().await?;
            warn!(event = "denied", peer = %self.peer, user = %who.user, role = who.role.name(), op = need.op, "{e}");
            // like any refusal before PUT_READY, the session goes on
            self.reply_error(&e).await?;
            if let Msg::Put { flags, .. } = msg
                && flags & protocol::PUT_PIPELINED != 0
            {
                self.discard_upload().await?;
            }
            return Ok(Flow::Next);
        }
        // replies go out in the order of the commands: queued uploads and
        // queued downloads wait for each other, anything else for both
        match msg {
            Msg::Put { size, flags, name } if queued(size, flags) => {
                self.drain(Which::Gets).await?;
                self.put_queued(size, flags, name, who, attrs).await?;
                return Ok(Flow::Next);
            }
            Msg::Get {
                offset,
                compress,
                name,
            } => {
                self.drain(Which::Puts).await?;
                self.get(offset, compress, name).await?;
                return Ok(Flow::Next);
            }
            Msg::List { path } => {
                self.drain(Which::Puts).await?;
                self.fetch(Fetch::Listing { path }).await?;
                return Ok(Flow::Next);
            }
            _ => self.drain_all().await?,
        }
        match msg {
            Msg::Put { size, flags, name } if flags & protocol::PUT_RANGES != 0 => {
                self.put_ranged(size, flags, name, attrs).await?
            }
            Msg::Put { size, flags, name } => self.put(size, flags, name, attrs).await?,
            Msg::TicketReq => self.ticket(crate::server::tickets::Bound::Download).await?,
            Msg::GetRange {
                offset,
                length,
                compress,
                name,
            } => self.get_range(offset, length, compress, name).await?,
            Msg::Clone {
                size,
                flags,
                sha256,
                name,
            } => self.clone_put(size, flags, sha256, name, attrs).await?,
            Msg::Remove { name } => self.remove(name).await?,
            Msg::Mkdir { name } => self.mkdir(name).await?,
            Msg::Rmdir { name } => self.rmdir(name).await?,
            Msg::Stat { name } => self.stat(name).await?,
            Msg::Shutdown { grace_ms } => self.shutdown(grace_ms, &who).await?,
            Msg::StatusReq => self.status().await?,
            Msg::UsageReq => self.usage(&who).await?,
            Msg::Reload => self.reload().await?,
            m @ (Msg::Share { .. } | Msg::ShareList | Msg::ShareRevoke { .. }) => {
                self.share(m, &who).await?
            }
            Msg::Bye => {
                debug!(peer = %self.peer, "end of session");
                self.w.send_now(&Msg::Bye).await?;
                return Ok(Flow::End);
            }
            other => {
                return Err(Error::protocol(format!(
                    "unexpected {} message between commands",
                    other.name()
                )));
            }
        }
        Ok(Flow::Next)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: Attrs = Attrs {
        mode: 0o640,
        mtime_ns: 7,
    };

    fn put() -> Msg {
        Msg::Put {
            size: 1,
            flags: 0,
            name: "a".into(),
        }
    }

    #[test]
    fn an_attrs_is_held_for_the_put_or_clone_after_it() {
        let attrs = Msg::Attrs {
            mode: 0o640,
            mtime_ns: 7,
        };
        assert_eq!(place_attrs(true, None, &attrs), Placed::Hold(A));
        assert_eq!(place_attrs(true, Some(A), &put()), Placed::Go(Some(A)));
        let clone = Msg::Clone {
            size: 1,
            flags: 0,
            sha256: [0; 32],
            name: "a".into(),
        };
        assert_eq!(place_attrs(true, Some(A), &clone), Placed::Go(Some(A)));
        assert_eq!(place_attrs(true, None, &Msg::Bye), Placed::Go(None));
        assert_eq!(place_attrs(false, None, &put()), Placed::Go(None));
    }

    #[test]
    fn a_misplaced_attrs_is_a_protocol_violation() {
        let attrs = Msg::Attrs {
            mode: 0o640,
            mtime_ns: 7,
        };
        let not_negotiated = place_attrs(false, None, &attrs);
        assert!(matches!(not_negotiated, Placed::Misplaced(w) if w.contains("FEATURE_META")));
        let twice = place_attrs(true, Some(A), &attrs);
        assert!(matches!(twice, Placed::Misplaced(w) if w.contains("another ATTRS")));
        let before_get = Msg::Get {
            offset: 0,
            compress: 0,
            name: "a".into(),
        };
        let stray = place_attrs(true, Some(A), &before_get);
        assert!(matches!(stray, Placed::Misplaced(w) if w.contains("not by GET")));
    }
}
