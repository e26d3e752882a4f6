//! Push mode: one long-lived WebSocket, resumed from the widget's cursor on every reconnect — the
//! widget's own to the server, or a running full client's (borrowed, `crate::borrow`).
//!
//! Borrowing and handing back never lose or repeat an event, because every event carries the global
//! cursor and every subscription resumes from the widget's position:
//! - **borrow**: while on its own stream, the source notices a full client of its account (the
//!   watcher's news, a keepalive tick, a send), opens and greets the full client's endpoint, and
//!   subscribes there with `resume` from its position; only when that snapshot has been applied is
//!   its own stream closed. Frames of the old stream that arrive meanwhile are not read: the resume
//!   covers them.
//! - **hand back**: when the borrowed link ends — the full client leaves (close 1001), crashes (the
//!   socket ends) or fails — the source connects its own stream at once, without back-off, and
//!   resumes from its position; its outbox goes again, and the server's client ids make a repeat
//!   harmless.
//! - Events at or before the position (possible only while two links overlap) are dropped.

use super::*;

/// How long a failed or departed full client is left alone before it may be borrowed from again
/// (unless the set of running full clients changes first).
const SHUN: Duration = Duration::from_secs(30);
/// The longest connecting to a full client's endpoint and getting its `welcome` may take.
const BORROW_TIMEOUT: Duration = Duration::from_secs(2);

impl Source {
    pub(super) async fn push(
        &mut self,
        config: &SourceConfig,
        cmds: &mut mpsc::UnboundedReceiver<SourceCmd>,
    ) -> Next {
        // What the stream changes as it goes (position, pins re-pinned on the same connection) must
        // survive a reconnect, so it lives here rather than in one stream's loop.
        let mut current = config.clone();
        let mut switch: Option<(Opened, Ws)> = None;
        loop {
            let (opened, old) = match switch.take() {
                Some((link, old)) => (Ok(link), Some(old)),
                None => {
                    if !self.emit(SourceEvent::Connection(Link::Connecting)).await {
                        return Next::Stop;
                    }
                    (self.open(&current).await, None)
                }
            };
            match opened {
                Ok(link) => {
                    self.backoff.reset();
                    let via = link.via;
                    match self.stream(&mut current, link, old, cmds).await {
                        Ended::Next(next) => return next,
                        Ended::Borrow(next) => {
                            switch = Some(*next);
                            continue;
                        }
                        Ended::Lost(why) => match via {
                            Via::FullClient(pid) => {
                                tracing::info!(pid, reason = %why, "the full client's link ended; taking the widget's own connection back");
                                self.shunned = Some((pid, Instant::now() + SHUN));
                                continue;
                            }
                            Via::Own => tracing::info!(reason = %why, "stream lost; reconnecting"),
                        },
                    }
                }
                Err(ConnectError::Auth(message)) => {
                    let _ = self.emit(SourceEvent::AuthRequired(message)).await;
                    return Next::WaitForKey;
                }
                Err(ConnectError::Other(why)) => tracing::info!(reason = %why, "cannot connect; will retry"),
            }
            // The server could not be reached: whoever asked for a refresh gets the state as it is.
            self.refreshed().await;
            if !self.emit(SourceEvent::Connection(Link::Offline)).await {
                return Next::Stop;
            }
            let delay = self.backoff.next();
            if let Some(next) = self.wait(cmds, &mut current, delay).await {
                return next;
            }
        }
    }

    /// Opens a link: a running full client's, when one is logged in as this account, else the
    /// widget's own.
    async fn open(&mut self, config: &SourceConfig) -> Result<Opened, ConnectError> {
        if let Some(full) = self.lender(config) {
            match self.borrow(&full, config).await {
                Ok(link) => return Ok(link),
                Err(why) => {
                    tracing::info!(pid = full.pid, reason = %why, "cannot borrow the full client's connection; using the widget's own");
                    self.shunned = Some((full.pid, Instant::now() + SHUN));
                }
            }
        }
        let (ws, keepalive) = self.connect(config).await?;
        Ok(Opened {
            ws,
            keepalive,
            via: Via::Own,
        })
    }

    /// A running full client of this widget's account that is not being left alone.
    fn lender(&mut self, config: &SourceConfig) -> Option<FullClient> {
        let account = config.account?;
        let full = self.full.find(config.remote.base(), account)?;
        match self.shunned {
            Some((pid, until)) if pid == full.pid && Instant::now() < until => None,
            _ => Some(full),
        }
    }

    /// Connects to a full client's endpoint and greets it.
    async fn borrow(&mut self, full: &FullClient, config: &SourceConfig) -> Result<Opened, String> {
        let connect = async {
            let stream = pinchat_ipc::transport::connect(&full.socket)
                .await
                .map_err(|e| format!("cannot connect to {}: {e}", full.socket.display()))?;
            // The endpoint must be served by the process that registered it (where the system says).
            if let Some(pid) = pinchat_ipc::transport::peer_pid(&stream)
                && pid != full.pid
            {
                return Err(format!(
                    "{} is served by process {pid}, not by the registered {}",
                    full.socket.display(),
                    full.pid
                ));
            }
            let ws_config =
                tokio_tungstenite::tungstenite::protocol::WebSocketConfig::default().read_buffer_size(4096);
            let (ws, _) = tokio_tungstenite::client_async_with_config(
                "ws://pinchat-full/v1/stream",
                stream,
                Some(ws_config),
            )
            .await
            .map_err(|e| format!("the endpoint did not answer as a full client: {e}"))?;
            Ok(Ws::Full(Box::new(ws)))
        };
        let ws = tokio::time::timeout(BORROW_TIMEOUT, connect)
            .await
            .map_err(|_| format!("no answer within {} s", BORROW_TIMEOUT.as_secs()))??;
        let (ws, welcome) = tokio::time::timeout(BORROW_TIMEOUT, greet(ws))
            .await
            .map_err(|_| format!("no welcome within {} s", BORROW_TIMEOUT.as_secs()))?
            .map_err(|e| match e {
                ConnectError::Auth(m) | ConnectError::Other(m) => m,
            })?;
        if Some(welcome.account) != config.account {
            return Err(format!(
                "it is logged in as account {}, not as the widget's",
                welcome.account
            ));
        }
        let keepalive = self.welcomed(welcome).await.map_err(|e| match e {
            ConnectError::Auth(m) | ConnectError::Other(m) => m,
        })?;
        Ok(Opened {
            ws,
            keepalive,
            via: Via::FullClient(full.pid),
        })
    }

    async fn connect(&mut self, config: &SourceConfig) -> Result<(Ws, Duration), ConnectError> {
        let ws = match config.remote.open_stream(&config.key).await {
            Ok(ws) => Ws::Server(Box::new(ws)),
            Err(StreamRefused::Auth(m)) => return Err(ConnectError::Auth(m)),
            Err(StreamRefused::Other(m)) => return Err(ConnectError::Other(m)),
        };
        let (ws, welcome) = greet(ws).await?;
        let keepalive = self.welcomed(welcome).await?;
        Ok((ws, keepalive))
    }

    /// Takes the link's `welcome`: passes it on to the widget and gives the keepalive interval.
    async fn welcomed(&mut self, w: Welcome) -> Result<Duration, ConnectError> {
        self.epoch = Some(w.epoch);
        let keepalive = Duration::from_secs(u64::from(w.keepalive_secs.max(5)));
        let event = SourceEvent::Welcome {
            epoch: w.epoch,
            me: w.me,
            max_pins: w.limits.max_pins,
            max_text_bytes: w.limits.max_text_bytes,
        };
        if !self.emit(event).await {
            return Err(ConnectError::Other("widget gone".into()));
        }
        Ok(keepalive)
    }

    /// Runs one link until it ends. `old` is the link it replaces (borrowing), closed once this one
    /// has delivered its first snapshot.
    async fn stream(
        &mut self,
        current: &mut SourceConfig,
        link: Opened,
        mut old: Option<Ws>,
        cmds: &mut mpsc::UnboundedReceiver<SourceCmd>,
    ) -> Ended {
        let Opened {
            mut ws,
            keepalive,
            via,
        } = link;
        // Only the widget's own link looks out for a full client to borrow from.
        let may_borrow = via == Via::Own && current.account.is_some();
        let mut next_req: ReqId = 1;
        // Requests that sent a message, by request id → the message's client id.
        let mut sends: HashMap<ReqId, String> = HashMap::new();
        // Call requests awaiting the server's answer. Dropped with the connection: their askers learn
        // that it was lost.
        let mut calls: HashMap<ReqId, crate::widget::Reply<Option<CallId>>> = HashMap::new();
        // Whatever this connection did not finish goes again on the next one.
        self.outbox.reset();

        let subscribe = |req: ReqId, current: &SourceConfig, epoch: Option<u64>| {
            let resume = current
                .position
                .filter(|p| Some(p.epoch) == epoch)
                .map(|p| Resume {
                    epoch: p.epoch,
                    cursor: p.cursor,
                    fresh: current.fresh.clone(),
                });
            ClientFrame::Subscribe {
                req,
                sub: 0,
                pins: current.pins.clone(),
                resume,
            }
        };
        let first = subscribe(next_req, current, self.epoch);
        next_req += 1;
        if let Err(e) = send(&mut ws, &first).await {
            return Ended::Lost(e);
        }
        let mut online = false;
        let mut ping = tokio::time::interval_at(Instant::now() + keepalive, keepalive);
        ping.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // Armed by a ping, disarmed by anything the server sends.
        let mut answer_due: Option<Instant> = None;
        let pong_timeout = PONG_TIMEOUT.min(keepalive);
        loop {
            let send_at = (online && self.outbox.waiting() && self.outbox.in_flight() < WINDOW)
                .then(|| self.pacer.ready_at());
            tokio::select! {
                incoming = next_frame(&mut ws) => {
                    answer_due = None;
                    let frame = match incoming {
                        Ok(Incoming::Frame(f)) => f,
                        Ok(Incoming::Pong) => continue,
                        Err(Closed::Auth(m)) => {
                            let _ = self.emit(SourceEvent::AuthRequired(m)).await;
                            return Ended::Next(Next::WaitForKey);
                        }
                        Err(Closed::RateLimited(m)) => {
                            self.pacer.slow_down();
                            return Ended::Lost(m);
                        }
                        Err(Closed::Other(e)) => return Ended::Lost(e),
                    };
                    let epoch = self.epoch.unwrap_or(0);
                    let event = match frame {
                        ServerFrame::Snapshot(snapshot) => {
                            current.position = Some(Position { epoch, cursor: snapshot.cursor });
                            current.fresh.clear();
                            let ev = SourceEvent::Snapshot { epoch, snapshot };
                            if !self.emit(ev).await {
                                return Ended::Next(Next::Stop);
                            }
                            // The new link has caught up: the one it replaces can go.
                            if let Some(mut old) = old.take() {
                                old.close().await;
                            }
                            if !online {
                                online = true;
                                if !self.emit(SourceEvent::Carrier(via)).await
                                    || !self.emit(SourceEvent::Connection(Link::Online)).await
                                {
                                    return Ended::Next(Next::Stop);
                                }
                            }
                            self.refreshed().await;
                            continue;
                        }
                        // Already applied (two links overlapped while borrowing or handing back).
                        ServerFrame::Delta { cursor, .. } | ServerFrame::Message { cursor, .. }
                            if current.position.is_some_and(|p| p.epoch == epoch && p.cursor >= cursor) =>
                        {
                            continue;
                        }
                        ServerFrame::Delta { cursor, contact, fields, .. } => {
                            current.position = Some(Position { epoch, cursor });
                            SourceEvent::Delta { cursor, contact, fields }
                        }
                        ServerFrame::Message { cursor, message, .. } => {
                            current.position = Some(Position { epoch, cursor });
                            SourceEvent::Message { cursor, message }
                        }
                        ServerFrame::Ack { req, result: Ack::Sent { id, ts, .. } } => match sends.remove(&req) {
                            Some(client_id) => {
                                self.outbox.remove(&client_id);
                                SourceEvent::Sent { client_id, id, ts }
                            }
                            None => continue,
                        },
                        ServerFrame::Ack { req, result } if calls.contains_key(&req) => {
                            let call = match result { Ack::Call { call } => Some(call), _ => None };
                            if let Some(reply) = calls.remove(&req) {
                                let _ = reply.send(Ok(call));
                            }
                            continue;
                        }
                        ServerFrame::Ack { .. } | ServerFrame::Welcome(_) => continue,
                        ServerFrame::Call { call, peer, event } => SourceEvent::Call { call, peer, event },
                        ServerFrame::Error { req: Some(req), error } => {
                            if let Some(reply) = calls.remove(&req) {
                                let _ = reply.send(Err(crate::error::WidgetError::Call(error.code, error.message)));
                                continue;
                            } else if let Some(client_id) = sends.remove(&req) {
                                if permanent(&error.code) {
                                    self.outbox.remove(&client_id);
                                    SourceEvent::Rejected { client_id, error }
                                } else {
                                    // Kept, and sent again on the next connection.
                                    tracing::info!(code = %error.code, "the server could not take a message now; it stays queued");
                                    self.outbox.set(&client_id, EntryState::Held);
                                    continue;
                                }
                            } else if via != Via::Own && !online {
                                // A full client that cannot carry the subscription (all of its
                                // stream's subscriptions taken, say): the widget's own link serves.
                                return Ended::Lost(format!(
                                    "the full client refused the subscription: {} ({})",
                                    error.message, error.code
                                ));
                            } else {
                                tracing::warn!(code = %error.code, message = %error.message, "the server refused a request");
                                continue;
                            }
                        }
                        ServerFrame::Error { req: None, error } => {
                            if error.code.needs_login() {
                                let _ = self.emit(SourceEvent::AuthRequired(error.message)).await;
                                return Ended::Next(Next::WaitForKey);
                            }
                            tracing::warn!(code = %error.code, message = %error.message, "stream error");
                            continue;
                        }
                    };
                    if !self.emit(event).await {
                        return Ended::Next(Next::Stop);
                    }
                }
                cmd = cmds.recv() => match cmd {
                    None => return Ended::Next(Next::Stop),
                    Some(SourceCmd::Configure(new)) => {
                        let same_link = new.key == current.key && new.mode == UpdateMode::Push && new.remote.base() == current.remote.base();
                        if !same_link {
                            ws.close().await;
                            return Ended::Next(Next::Reconfigure(new));
                        }
                        // Re-pin on the same stream: resume for the pins we hold, full entries for new ones.
                        current.pins.clone_from(&new.pins);
                        current.fresh.clone_from(&new.fresh);
                        let frame = subscribe(next_req, current, self.epoch);
                        next_req += 1;
                        if let Err(e) = send(&mut ws, &frame).await {
                            return Ended::Lost(e);
                        }
                    }
                    Some(SourceCmd::Send(m)) => {
                        // Before a send is a moment to look for a full client (claim 9).
                        if may_borrow {
                            self.full.recheck();
                        }
                        self.outbox.add(m);
                    }
                    Some(SourceCmd::Refresh) => {
                        self.refreshes += 1;
                        let frame = subscribe(next_req, current, self.epoch);
                        next_req += 1;
                        if let Err(e) = send(&mut ws, &frame).await {
                            return Ended::Lost(e);
                        }
                    }
                    Some(SourceCmd::Resync(position)) => {
                        current.position = position;
                        let frame = subscribe(next_req, current, self.epoch);
                        next_req += 1;
                        if let Err(e) = send(&mut ws, &frame).await {
                            return Ended::Lost(e);
                        }
                    }
                    Some(SourceCmd::Call(c)) if !online => c.unavailable(),
                    Some(SourceCmd::Call(CallRequest { op, reply })) => {
                        let req = next_req;
                        next_req += 1;
                        let frame = match op {
                            CallOp::Invite { to, video } => ClientFrame::CallInvite { req, to, video },
                            CallOp::Signal { call, signal } => ClientFrame::CallSignal { req, call, signal },
                        };
                        calls.insert(req, reply);
                        if let Err(e) = send(&mut ws, &frame).await {
                            return Ended::Lost(e);
                        }
                    }
                },
                _ = until(send_at) => {
                    let Some(m) = self.outbox.next() else { continue };
                    self.pacer.take();
                    let req = next_req;
                    next_req += 1;
                    sends.insert(req, m.client_id.clone());
                    let frame = ClientFrame::Send { req, to: m.to, client_id: m.client_id, text: m.text };
                    if let Err(e) = send(&mut ws, &frame).await {
                        return Ended::Lost(e);
                    }
                }
                () = self.full.changed(), if may_borrow => {
                        self.shunned = None;
                        if let Some(full) = self.lender(current) {
                            match self.borrow(&full, current).await {
                                Ok(link) => return Ended::Borrow(Box::new((link, ws))),
                                Err(why) => {
                                    tracing::info!(pid = full.pid, reason = %why, "cannot borrow the full client's connection; keeping the widget's own");
                                    self.shunned = Some((full.pid, Instant::now() + SHUN));
                                }
                            }
                        }
                }
                _ = ping.tick() => {
                    if may_borrow {
                        self.full.tick();
                    }
                    match tokio::time::timeout(WRITE_TIMEOUT, ws.send(WsMessage::Ping(Vec::new().into()))).await {
                        Ok(Ok(())) => {}
                        Ok(Err(e)) => return Ended::Lost(e.to_string()),
                        Err(_) => return Ended::Lost("the connection accepts nothing (keepalive not sent)".into()),
                    }
                    answer_due.get_or_insert(Instant::now() + pong_timeout);
                }
                _ = until(answer_due) => {
                    return Ended::Lost(format!(
                        "no answer to a keepalive within {} s; the connection is dead",
                        pong_timeout.as_secs()
                    ));
                }
            }
        }
    }
}

/// Says `hello` and waits for the `welcome`.
async fn greet(mut ws: Ws) -> Result<(Ws, Welcome), ConnectError> {
    send(
        &mut ws,
        &ClientFrame::Hello {
            version: PROTOCOL_VERSION,
        },
    )
    .await
    .map_err(ConnectError::Other)?;
    let welcome = tokio::time::timeout(Duration::from_secs(15), next_frame(&mut ws))
        .await
        .map_err(|_| ConnectError::Other("no welcome within 15 s".into()))?;
    match welcome {
        Ok(Incoming::Frame(ServerFrame::Welcome(w))) => Ok((ws, w)),
        Ok(Incoming::Frame(ServerFrame::Error { error, .. })) if error.code.needs_login() => {
            Err(ConnectError::Auth(error.message))
        }
        Ok(Incoming::Frame(ServerFrame::Error { error, .. })) => Err(ConnectError::Other(format!(
            "refused: {} ({})",
            error.message, error.code
        ))),
        Ok(Incoming::Frame(other)) => Err(ConnectError::Other(format!("expected welcome, got {other:?}"))),
        Ok(Incoming::Pong) => Err(ConnectError::Other("expected welcome, got a pong".into())),
        Err(Closed::Auth(m)) => Err(ConnectError::Auth(m)),
        Err(Closed::RateLimited(m) | Closed::Other(m)) => Err(ConnectError::Other(m)),
    }
}
