//! Poll and manual modes: `GET /v1/changes` every interval, or when asked; sending over HTTP.

use super::*;

impl Source {
    pub(super) async fn poll(
        &mut self,
        config: &SourceConfig,
        cmds: &mut mpsc::UnboundedReceiver<SourceCmd>,
    ) -> Next {
        let mut position = config.position;
        let mut fresh = config.fresh.clone();
        let mut online = false;
        // Sending is allowed until a send cannot reach the server, and again after a back-off or a
        // successful poll.
        let mut can_send = true;
        let mut retry_send: Option<Instant> = None;
        self.outbox.reset();
        // The first round polls at once in poll mode, and in manual mode only when there is nothing to show.
        // A re-pin ([0049]) fetches the new pins at once in every mode.
        let mut due = config.mode == UpdateMode::Poll || position.is_none() || !config.fresh.is_empty();
        let mut next_poll: Option<Instant> = None;

        loop {
            if due {
                due = false;
                let since = position.filter(|p| p.epoch != 0);
                match config
                    .remote
                    .changes(&config.key, &config.pins, since, &fresh)
                    .await
                {
                    Ok((snapshot, epoch, cursor)) => {
                        self.epoch = Some(epoch);
                        if let Some(snapshot) = snapshot {
                            position = Some(Position {
                                epoch,
                                cursor: snapshot.cursor,
                            });
                            fresh.clear();
                            if !self.emit(SourceEvent::Snapshot { epoch, snapshot }).await {
                                return Next::Stop;
                            }
                        } else if position.is_some() {
                            let p = Position { epoch, cursor };
                            position = Some(p);
                            if !self.emit(SourceEvent::Synced { position: p }).await {
                                return Next::Stop;
                            }
                        }
                        self.backoff.reset();
                        can_send = true;
                        retry_send = None;
                        if !online {
                            online = true;
                            if !self.emit(SourceEvent::Connection(Link::Online)).await {
                                return Next::Stop;
                            }
                        }
                    }
                    Err(e) if e.is_auth() => {
                        let _ = self.emit(SourceEvent::AuthRequired(e.to_string())).await;
                        return Next::WaitForKey;
                    }
                    Err(e) => {
                        tracing::info!(error = %e, "poll failed");
                        if online || position.is_some() {
                            online = false;
                            if !self.emit(SourceEvent::Connection(Link::Offline)).await {
                                return Next::Stop;
                            }
                        }
                    }
                }
                self.refreshed().await;
                next_poll = match config.mode {
                    UpdateMode::Poll if online => Some(Instant::now() + config.interval),
                    UpdateMode::Poll => Some(Instant::now() + self.backoff.next().min(config.interval)),
                    // Manual: nothing happens until asked.
                    _ => None,
                };
            }
            let send_at = (can_send && self.outbox.waiting()).then(|| self.pacer.ready_at());
            tokio::select! {
                _ = until(next_poll) => due = true,
                _ = until(retry_send) => {
                    retry_send = None;
                    can_send = true;
                    self.outbox.reset();
                }
                cmd = cmds.recv() => match cmd {
                    None => return Next::Stop,
                    Some(SourceCmd::Configure(c)) => return Next::Reconfigure(c),
                    Some(SourceCmd::Refresh) => {
                        due = true;
                        self.refreshes += 1;
                    }
                    Some(SourceCmd::Send(m)) => self.outbox.add(m),
                    Some(SourceCmd::Call(c)) => c.unavailable(),
                    Some(SourceCmd::Resync(p)) => {
                        position = p;
                        due = true;
                    }
                },
                _ = until(send_at) => {
                    let Some(m) = self.outbox.next() else { continue };
                    self.pacer.take();
                    match config.remote.send_message(&config.key, m.to, &m.client_id, &m.text).await {
                        Ok(r) => {
                            self.outbox.remove(&m.client_id);
                            let sent = SourceEvent::Sent { client_id: m.client_id, id: r.id, ts: r.ts };
                            if !self.emit(sent).await {
                                return Next::Stop;
                            }
                        }
                        Err(e) if e.is_auth() => {
                            self.outbox.set(&m.client_id, EntryState::Waiting);
                            let _ = self.emit(SourceEvent::AuthRequired(e.to_string())).await;
                            return Next::WaitForKey;
                        }
                        Err(RemoteError::Server(error)) if permanent(&error.code) => {
                            self.outbox.remove(&m.client_id);
                            if !self.emit(SourceEvent::Rejected { client_id: m.client_id, error }).await {
                                return Next::Stop;
                            }
                        }
                        // Kept for the next time the server answers.
                        Err(e) => {
                            tracing::info!(error = %e, "send failed; will retry");
                            self.outbox.set(&m.client_id, EntryState::Held);
                            can_send = false;
                            retry_send = Some(Instant::now() + self.backoff.next());
                        }
                    }
                }
            }
        }
    }
}
