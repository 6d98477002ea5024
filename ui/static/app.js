// Contractual Control UI: the pairing page's device side. The browser's
// Ed25519 key is made with WebCrypto as non-extractable and lives only in
// this page's memory (never in localStorage, sessionStorage or IndexedDB).
// The page talks only to the UI's JSON endpoints; the device token they
// earn goes into an HttpOnly cookie that this script never sees.
//
// At most one completion request is in flight at a time: the timer's
// polls and the one that follows an accepted setup code go through poll(),
// which waits for the request in flight instead of sending a second one.
// (Two at once was a race: after approval, both could reach the server,
// one to succeed and one to be refused as a repeat of the same proof.)
(function () {
  "use strict";

  var root = document.getElementById("pair");
  if (!root) {
    return;
  }
  var $ = function (id) { return document.getElementById(id); };
  var nameInput = $("pair-name");
  var scopesInput = $("pair-scopes");
  var startBtn = $("pair-start");
  var setupInput = $("setup-code");
  var setupBtn = $("setup-submit");
  var restartBtn = $("pair-restart");
  var statusEl = $("pair-status");
  var PREFIX = "contractual-pair-v1\n";
  var POLL_MS = 2000;

  var keyPair = null;   // Promise of the CryptoKeyPair
  var pending = null;   // {code, device_id, nonce, expires, signature}
  var timer = null;
  var inflight = false; // a completion request is on its way
  var again = false;    // poll again as soon as it is back

  function say(msg, kind) {
    statusEl.textContent = msg;
    statusEl.className = "status" + (kind ? " " + kind : "");
  }

  function unsupported(msg) {
    var el = $("pair-unsupported");
    el.textContent = msg;
    el.hidden = false;
    startBtn.disabled = true;
    nameInput.disabled = true;
    scopesInput.disabled = true;
  }

  function b64(buf) {
    var bytes = new Uint8Array(buf), s = "";
    for (var i = 0; i < bytes.length; i++) {
      s += String.fromCharCode(bytes[i]);
    }
    return btoa(s);
  }

  function guessName() {
    var ua = navigator.userAgent || "";
    var browser = /Firefox\//.test(ua) ? "Firefox" : /Edg\//.test(ua) ? "Edge" :
      /Chrom(e|ium)\//.test(ua) ? "Chrome" : /Safari\//.test(ua) ? "Safari" : "browser";
    var os = /Android/.test(ua) ? "Android" : /iPhone|iPad/.test(ua) ? "iOS" : /Mac OS X/.test(ua) ? "macOS" :
      /Windows/.test(ua) ? "Windows" : /Linux/.test(ua) ? "Linux" : "";
    return (browser + (os ? " on " + os : "")).slice(0, 64);
  }

  async function post(path, body) {
    var resp = await fetch(path, {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify(body),
      credentials: "same-origin",
      cache: "no-store",
      redirect: "error"
    });
    var data = {};
    try {
      data = await resp.json();
    } catch (e) {
      data = { error: "unexpected answer from the server (HTTP " + resp.status + ")" };
    }
    return { status: resp.status, data: data };
  }

  function newKey() {
    return crypto.subtle.generateKey({ name: "Ed25519" }, false, ["sign", "verify"]);
  }

  function stopPolling() {
    if (timer !== null) {
      clearTimeout(timer);
      timer = null;
    }
  }

  function failed(msg) {
    stopPolling();
    pending = null;
    say(msg, "bad");
    setupBtn.disabled = true;
    restartBtn.hidden = false;
  }

  async function start() {
    var name = nameInput.value.trim();
    if (name === "") {
      name = guessName();
      nameInput.value = name;
    }
    startBtn.disabled = true;
    say("Making this browser's key and asking to pair…");
    try {
      var kp = await keyPair;
      var raw = await crypto.subtle.exportKey("raw", kp.publicKey);
      var r = await post("/ui/pair/begin", { name: name, public_key: b64(raw), scopes: [scopesInput.value] });
      if (r.status !== 200) {
        startBtn.disabled = false;
        say(r.data.error || ("pairing refused (HTTP " + r.status + ")"), "bad");
        return;
      }
      var msg = new TextEncoder().encode(PREFIX + r.data.device_id + "\n" + r.data.nonce);
      var sig = await crypto.subtle.sign({ name: "Ed25519" }, kp.privateKey, msg);
      pending = {
        code: r.data.code, device_id: r.data.device_id, nonce: r.data.nonce,
        expires: Date.parse(r.data.expires_at), signature: b64(sig)
      };
      $("pair-code").textContent = r.data.code;
      $("pair-code-again").textContent = r.data.code;
      $("pair-device-id").textContent = r.data.device_id;
      $("pair-scopes-asked").textContent = (r.data.scopes || []).join(", ");
      $("pair-expires").textContent = new Date(pending.expires).toLocaleTimeString();
      $("pair-step1").hidden = true;
      $("pair-step2").hidden = false;
      setupBtn.disabled = false;
      say("Waiting for approval: approve code " + r.data.code + " on a paired device, or enter the setup code.");
      schedule();
    } catch (e) {
      startBtn.disabled = false;
      say("Could not pair: " + e.message, "bad");
    }
  }

  function schedule() {
    stopPolling();
    timer = setTimeout(poll, POLL_MS);
  }

  // poll asks once whether the request is approved, and completes pairing
  // if it is. With a request already in flight it sends nothing and has
  // that one poll again when it is back.
  async function poll() {
    timer = null;
    if (!pending) {
      return;
    }
    if (inflight) {
      again = true;
      return;
    }
    if (Date.now() > pending.expires) {
      failed("The pairing request expired before it was approved. Start again.");
      return;
    }
    var p = pending, r = null;
    inflight = true;
    again = false;
    try {
      r = await post("/ui/pair/complete", { device_id: p.device_id, nonce: p.nonce, signature: p.signature });
    } catch (e) {
      r = null; // a network hiccup: keep trying until the request expires
    } finally {
      inflight = false;
    }
    if (p !== pending) {
      // Started again meanwhile: serve the new request's waiting poll.
      if (again) {
        again = false;
        poll();
      }
      return;
    }
    if (r === null) {
      say("Waiting for approval (the server did not answer; retrying)…");
      schedule();
      return;
    }
    if (r.status === 200 && r.data.ok) {
      pending = null;
      say("Paired. Opening the Control UI…", "ok");
      window.location.assign("/ui/?done=paired");
      return;
    }
    if (r.status === 202 && r.data.pending) {
      if (again) {
        again = false;
        poll();
      } else {
        schedule();
      }
      return;
    }
    failed(r.data.error || ("pairing failed (HTTP " + r.status + ")"));
  }

  async function useSetupCode() {
    if (!pending) {
      return;
    }
    var code = setupInput.value.trim();
    if (code === "") {
      say("Enter the setup code printed on the server's console.", "bad");
      return;
    }
    setupBtn.disabled = true;
    say("Checking the setup code…");
    try {
      var r = await post("/ui/pair/setup", { code: pending.code, setup_code: code });
      if (r.status !== 200) {
        setupBtn.disabled = false;
        say(r.data.error || ("setup code refused (HTTP " + r.status + ")"), "bad");
        return;
      }
      setupInput.value = "";
      say("Setup code accepted; finishing pairing…");
      stopPolling();
      poll(); // now, or as soon as the request in flight is back
    } catch (e) {
      setupBtn.disabled = false;
      say("Could not send the setup code: " + e.message, "bad");
    }
  }

  function restart() {
    stopPolling();
    pending = null;
    again = false;
    keyPair = newKey();
    keyPair.catch(function () {});
    $("pair-step2").hidden = true;
    $("pair-step1").hidden = false;
    restartBtn.hidden = true;
    startBtn.disabled = false;
    say("");
  }

  if (!window.isSecureContext || !window.crypto || !crypto.subtle) {
    unsupported("This browser offers no WebCrypto here, because the page is not a secure context: WebCrypto needs HTTPS " +
      "or localhost. Open the Control UI over HTTPS (for example with `tailscale serve`) or on localhost.");
    return;
  }
  keyPair = newKey();
  keyPair.then(null, function () {
    unsupported("This browser cannot make an Ed25519 key with WebCrypto, which pairing needs. " +
      "Use a current Chrome, Edge, Firefox or Safari.");
  });
  if (nameInput.value === "") {
    nameInput.value = guessName();
  }
  startBtn.addEventListener("click", start);
  setupBtn.addEventListener("click", useSetupCode);
  restartBtn.addEventListener("click", restart);
  nameInput.addEventListener("keydown", function (ev) {
    if (ev.key === "Enter" && !startBtn.disabled) {
      start();
    }
  });
  // A hidden tab's timers are throttled (to once a minute in Chrome): ask
  // at once when it is shown again, so that an approval given meanwhile is
  // completed before its nonce goes stale.
  document.addEventListener("visibilitychange", function () {
    if (!document.hidden && pending && timer !== null) {
      stopPolling();
      poll();
    }
  });
  setupInput.addEventListener("keydown", function (ev) {
    if (ev.key === "Enter" && !setupBtn.disabled) {
      useSetupCode();
    }
  });
})();

// The audit log's consistency, on the pages that show its verification.
// This browser is a device that remembers the newest signed checkpoint of
// the audit log it has seen (in localStorage: a checkpoint is public) and
// has the server check that the log still extends it: a log truncated or
// rewritten behind the server's back, or restored from an older copy, no
// longer does. On tampering the page shows an alert and this browser keeps
// the checkpoint it saw.
(function () {
  "use strict";

  var el = document.getElementById("audit-consistency");
  if (!el) {
    return;
  }
  var KEY = "contractual.audit.checkpoint.v1";

  function show(msg, kind) {
    el.textContent = msg;
    el.className = "banner " + kind;
    el.setAttribute("role", kind === "bad" ? "alert" : "status");
    el.hidden = false;
  }

  function describe(cp) {
    return "checkpoint " + cp.seq + " (index " + cp.index + ")";
  }

  async function check() {
    var seen = null;
    try {
      seen = localStorage.getItem(KEY);
    } catch (e) {
      show("This browser cannot keep the audit log's checkpoint (no localStorage), so it cannot check that the log was not rolled back.", "bad");
      return;
    }
    var body = new URLSearchParams();
    body.set("csrf", el.dataset.csrf);
    if (seen) {
      body.set("seen", seen);
    }
    var resp, data;
    try {
      resp = await fetch("/ui/audit/checkpoint", {
        method: "POST", body: body, credentials: "same-origin", cache: "no-store", redirect: "error"
      });
      data = await resp.json();
    } catch (e) {
      show("Could not check the audit log against the checkpoint this browser saw: " + e.message, "bad");
      return;
    }
    if (resp.status !== 200) {
      show("Could not check the audit log against the checkpoint this browser saw: " + (data.error || "HTTP " + resp.status), "bad");
      return;
    }
    if (!data.ok) {
      var kept = "";
      try {
        kept = " This browser keeps the " + describe(JSON.parse(seen)) + " it saw.";
      } catch (e) {}
      show("Audit log TAMPERING: " + data.problem + "." + kept, "bad");
      return;
    }
    if (!data.checkpoint) {
      el.hidden = true; // no signed checkpoint yet, nothing seen: nothing to say
      return;
    }
    localStorage.setItem(KEY, JSON.stringify(data.checkpoint));
    if (data.pruned) {
      show("The audit log was pruned since this browser last looked: " + data.pruned +
        ". The live log extends its anchor; this browser now remembers " + describe(data.checkpoint) + ".", "ok");
      return;
    }
    show("This browser remembers " + describe(data.checkpoint) + " of the audit log" +
      (seen ? "; the log extends the checkpoint it saw before." : ", the first it has seen."), "ok");
  }

  check();
})();
