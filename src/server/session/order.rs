//! Replies in the order of the commands: answers the committer and the
//! reader prepared for queued commands go out before any later reply.

use super::*;

impl Session {
    /// The next answer owed by one of the session's workers, in order.
    pub(super) async fn next_answer(&mut self, which: Which) -> Option<Answer> {
        match which {
            Which::Puts => match self.commits.as_mut() {
                Some(c) => c.answers.next().await.map(Answer::Put),
                None => None,
            },
            Which::Gets => match self.fetches.as_mut() {
                Some(f) => f.answers.next().await.map(|f| Answer::Get(Box::new(f))),
                None => None,
            },
        }
    }

    /// The next answer owed by one of the session's workers, if it is ready.
    pub(super) fn try_answer(&mut self, which: Which) -> Option<Answer> {
        match which {
            Which::Puts => self
                .commits
                .as_mut()
                .and_then(|c| c.answers.try_next())
                .map(Answer::Put),
            Which::Gets => self
                .fetches
                .as_mut()
                .and_then(|f| f.answers.try_next())
                .map(|f| Answer::Get(Box::new(f))),
        }
    }

    /// Send one answer (buffered; a large download is streamed).
    pub(super) async fn answer(&mut self, a: Answer) -> Result<()> {
        match a {
            Answer::Put(c) => {
                self.finish_put(&c.name, c.size, c.started, c.outcome, false)
                    .await
            }
            Answer::Get(f) => self.reply_fetched(*f).await,
        }
    }

    /// Send `first` and every answer of its kind that is ready, then flush.
    pub(super) async fn flush_answers(&mut self, first: Answer) -> Result<()> {
        let which = match first {
            Answer::Put(_) => Which::Puts,
            Answer::Get(_) => Which::Gets,
        };
        self.answer(first).await?;
        while let Some(a) = self.try_answer(which) {
            self.answer(a).await?;
        }
        self.w.flush().await
    }

    /// Wait for every answer one worker owes and send it: before any other
    /// reply, so replies stay in the order of the commands.
    pub(super) async fn drain(&mut self, which: Which) -> Result<()> {
        let mut any = false;
        while let Some(a) = self.next_answer(which).await {
            self.answer(a).await?;
            any = true;
        }
        if any {
            self.w.flush().await?;
        }
        Ok(())
    }

    /// Every answer owed, uploads' and downloads'.
    pub(super) async fn drain_all(&mut self) -> Result<()> {
        self.drain(Which::Puts).await?;
        self.drain(Which::Gets).await
    }
}

/// What the command loop woke up for.
pub(super) enum Ahead {
    Answer(Answer),
    Command(std::result::Result<Result<Option<Msg>>, tokio::time::error::Elapsed>),
}

/// A reply a worker prepared for a queued command.
pub(super) enum Answer {
    Put(Committed),
    Get(Box<Fetched>),
}

/// The session's workers: the committer of small uploads, the reader of
/// downloads and listings.
#[derive(Clone, Copy)]
pub(super) enum Which {
    Puts,
    Gets,
}
