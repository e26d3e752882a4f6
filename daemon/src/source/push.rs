//! Push mode: one long-lived WebSocket, resumed from the widget's cursor on every reconnect.

use super::*;

impl Source {
    pub(super) async fn push(
        &mut self,
        config: &SourceConfig,
        cmds: &mut mpsc::UnboundedReceiver<SourceCmd>,
    ) -> Next {
        // What the stream changes as it goes (position, pins re-pinned on the same connection) must
        // survive a reconnect, so it lives here rather than in one stream's loop.
        let mut current = config.clone();
        loop {
            if !self.emit(SourceEvent::Connection(Link::Connecting)).await {
                return Next::Stop;
            }
            match self.connect(&current).await {
                Ok((ws, keepalive)) => {
                    self.backoff.reset();
                    match self.stream(&mut current, ws, keepalive, cmds).await {
                        Ended::Next(next) => return next,
                        Ended::Lost(why) => tracing::info!(reason = %why, "stream lost; reconnecting"),
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

    async fn connect(&mut self, config: &SourceConfig) -> Result<(Ws, Duration), ConnectError> {
        let mut request = config
            .remote
            .stream_url()
            .into_client_request()
            .map_err(|e| ConnectError::Other(e.to_string()))?;
        let auth = format!("Bearer {}", config.key)
            .parse()
            .map_err(|_| ConnectError::Auth("the stored key is not valid".into()))?;
        request.headers_mut().insert("authorization", auth);
        let connector = if request.uri().scheme_str() == Some("wss") {
            crate::remote::stream_tls().map(tokio_tungstenite::Connector::Rustls)
        } else {
            Some(tokio_tungstenite::Connector::Plain)
        };
        // A small read buffer: tungstenite's default (128 KiB) is zeroed and so resident for every
        // widget's stream, although the server's frames are small; a larger frame grows the buffer.
        let ws_config =
            tokio_tungstenite::tungstenite::protocol::WebSocketConfig::default().read_buffer_size(4096);
        let connect =
            tokio_tungstenite::connect_async_tls_with_config(request, Some(ws_config), false, connector);
        let (mut ws, _) = match tokio::time::timeout(Duration::from_secs(15), connect).await {
            Err(_) => return Err(ConnectError::Other("timed out".into())),
            Ok(Err(tokio_tungstenite::tungstenite::Error::Http(r)))
                if r.status().as_u16() == 401 || r.status().as_u16() == 403 =>
            {
                let body = r
                    .body()
                    .as_ref()
                    .map(|b| String::from_utf8_lossy(b).into_owned())
                    .unwrap_or_default();
                return Err(ConnectError::Auth(body));
            }
            Ok(Err(e)) => return Err(ConnectError::Other(e.to_string())),
            Ok(Ok(x)) => x,
        };
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
            Ok(Incoming::Frame(ServerFrame::Welcome(w))) => {
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
                Ok((ws, keepalive))
            }
            Ok(Incoming::Frame(ServerFrame::Error { error, .. })) if error.code.needs_login() => {
                Err(ConnectError::Auth(error.message))
            }
            Ok(Incoming::Frame(other)) => {
                Err(ConnectError::Other(format!("expected welcome, got {other:?}")))
            }
            Ok(Incoming::Pong) => Err(ConnectError::Other("expected welcome, got a pong".into())),
            Err(Closed::Auth(m)) => Err(ConnectError::Auth(m)),
            Err(Closed::RateLimited(m) | Closed::Other(m)) => Err(ConnectError::Other(m)),
        }
    }

    async fn stream(
        &mut self,
        current: &mut SourceConfig,
        mut ws: Ws,
        keepalive: Duration,
        cmds: &mut mpsc::UnboundedReceiver<SourceCmd>,
    ) -> Ended {
        let mut next_req: ReqId = 1;
        // Requests that sent a message, by request id → the message's client id.
        let mut sends: HashMap<ReqId, String> = HashMap::new();
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
                            if !online {
                                online = true;
                                if !self.emit(SourceEvent::Connection(Link::Online)).await {
                                    return Ended::Next(Next::Stop);
                                }
                            }
                            self.refreshed().await;
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
                        ServerFrame::Ack { .. } | ServerFrame::Welcome(_) => continue,
                        ServerFrame::Error { req: Some(req), error } => {
                            if let Some(client_id) = sends.remove(&req) {
                                if permanent(&error.code) {
                                    self.outbox.remove(&client_id);
                                    SourceEvent::Rejected { client_id, error }
                                } else {
                                    // Kept, and sent again on the next connection.
                                    tracing::info!(code = %error.code, "the server could not take a message now; it stays queued");
                                    self.outbox.set(&client_id, EntryState::Held);
                                    continue;
                                }
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
                            let _ = tokio::time::timeout(WRITE_TIMEOUT, ws.close(None)).await;
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
                    Some(SourceCmd::Send(m)) => self.outbox.add(m),
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
                _ = ping.tick() => {
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
