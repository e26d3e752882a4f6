// pinchat's web media engine: one side of one call, in the page, for webviews that have WebRTC
// (WebView2 on Windows, WKWebView on macOS; Chromium in the tests). Where the webview has none
// (WebKitGTK), the native engine (pinchat-media, GStreamer) runs the call instead and this file is
// not used for media. Both speak the same signals, as the wire protocol carries them:
//   {offer: {sdp}}, {answer: {sdp}}, {ice: {candidate, mline, mid}}
// and so interoperate. The engine knows nothing of how signals travel: its owner passes the peer's
// signals to remote() and sends what onSignal gives it.
"use strict";

class PinchatCall {
  // options: {iceServers: [{urls, username?, credential?}] (GET /v1/ice's ice_servers),
  //           relayOnly, video, localStream (a MediaStream to send), onSignal(signal),
  //           onState(state), onRemoteStream(stream)}
  constructor(options) {
    this.options = options;
    this.early = [];
    this.described = false;
    const config = {
      iceServers: (options.iceServers || []).map((s) => {
        const server = { urls: s.urls };
        if (s.username) server.username = s.username;
        if (s.credential) server.credential = s.credential;
        return server;
      }),
      iceTransportPolicy: options.relayOnly ? "relay" : "all",
      bundlePolicy: "max-bundle",
    };
    const pc = new RTCPeerConnection(config);
    this.pc = pc;
    for (const track of options.localStream.getTracks()) pc.addTrack(track, options.localStream);
    pc.onicecandidate = (e) => {
      const c = e.candidate;
      options.onSignal({ ice: c ? { candidate: c.candidate, mline: c.sdpMLineIndex || 0, mid: c.sdpMid } :
        { candidate: "", mline: 0, mid: null } });
    };
    pc.oniceconnectionstatechange = () => options.onState && options.onState(pc.iceConnectionState);
    // The peer's sound and picture in one stream, whichever streams its description names (a line
    // offered to receive only, or a peer that names none, gives tracks without one): a stream per
    // track would leave the picture's element playing the sound alone.
    this.remoteStream = new MediaStream();
    pc.ontrack = (e) => {
      if (!this.remoteStream.getTracks().includes(e.track)) this.remoteStream.addTrack(e.track);
      if (options.onRemoteStream) options.onRemoteStream(this.remoteStream);
    };
  }

  // The caller, once the callee accepted: make and send the offer. What the computer has no device
  // for is still offered, to receive (the callee's answer keeps the offer's lines either way).
  async offer() {
    const kinds = new Set(this.options.localStream.getTracks().map((t) => t.kind));
    if (!kinds.has("audio")) this.pc.addTransceiver("audio", { direction: "recvonly" });
    if (this.options.video && !kinds.has("video")) this.pc.addTransceiver("video", { direction: "recvonly" });
    const offer = await this.pc.createOffer();
    await this.pc.setLocalDescription(offer);
    this.options.onSignal({ offer: { sdp: this.pc.localDescription.sdp } });
  }

  // The peer's offer (answered at once), answer, or candidate.
  async remote(signal) {
    if (signal.offer) {
      await this.pc.setRemoteDescription({ type: "offer", sdp: signal.offer.sdp });
      await this.described_();
      const answer = await this.pc.createAnswer();
      await this.pc.setLocalDescription(answer);
      this.options.onSignal({ answer: { sdp: this.pc.localDescription.sdp } });
    } else if (signal.answer) {
      await this.pc.setRemoteDescription({ type: "answer", sdp: signal.answer.sdp });
      await this.described_();
    } else if (signal.ice && signal.ice.candidate) {
      const c = { candidate: signal.ice.candidate, sdpMLineIndex: signal.ice.mline };
      if (signal.ice.mid != null) c.sdpMid = signal.ice.mid;
      if (this.described) await this.pc.addIceCandidate(c);
      else this.early.push(c);
    }
  }

  async described_() {
    this.described = true;
    for (const c of this.early.splice(0)) await this.pc.addIceCandidate(c);
  }

  // Mute the microphone, or turn the camera off (the track stays, sending silence or black).
  setMuted(muted) { for (const t of this.options.localStream.getAudioTracks()) t.enabled = !muted; }
  setCamera(on) { for (const t of this.options.localStream.getVideoTracks()) t.enabled = on; }

  // {videoFrames, audioPackets, relayed}: what arrived, and whether the media goes through TURN.
  async stats() {
    const out = { videoFrames: 0, audioPackets: 0, relayed: false };
    const report = await this.pc.getStats();
    let pair = null;
    report.forEach((s) => {
      if (s.type === "inbound-rtp" && s.kind === "video") out.videoFrames = s.framesDecoded || 0;
      if (s.type === "inbound-rtp" && s.kind === "audio") out.audioPackets = s.packetsReceived || 0;
      if (s.type === "transport" && s.selectedCandidatePairId) pair = report.get(s.selectedCandidatePairId);
    });
    if (pair) {
      const local = report.get(pair.localCandidateId);
      out.relayed = !!local && local.candidateType === "relay";
    }
    return out;
  }

  close() { this.pc.close(); for (const t of this.options.localStream.getTracks()) t.stop(); }
}

// A stream of a solid colour and a quiet tone, for tests and for machines without a camera.
function pinchatTestStream(rgb, width, height) {
  const canvas = document.createElement("canvas");
  canvas.width = width; canvas.height = height;
  const g = canvas.getContext("2d");
  const paint = () => { g.fillStyle = "#" + rgb.toString(16).padStart(6, "0"); g.fillRect(0, 0, width, height); };
  paint();
  // A canvas stream sends a frame when the canvas changes: repaint steadily.
  setInterval(paint, 66);
  const stream = canvas.captureStream(15);
  const audio = new AudioContext();
  const tone = audio.createOscillator();
  const gain = audio.createGain();
  gain.gain.value = 0.05;
  const out = audio.createMediaStreamDestination();
  tone.connect(gain).connect(out);
  tone.start();
  for (const t of out.stream.getAudioTracks()) stream.addTrack(t);
  return stream;
}

window.PinchatCall = PinchatCall;
window.pinchatTestStream = pinchatTestStream;
