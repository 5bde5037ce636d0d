// billvend: small progressive enhancements. Every page works without this
// file; buttons that need it carry the class "js-only" and stay hidden when
// JavaScript is off (see app.css).
(function () {
  "use strict";

  // Loaded in <head> without defer: JS-only controls are shown from the first
  // paint (the CSP forbids the inline script that used to do this).
  document.documentElement.classList.add("js");

  // Copy text (a token) without the clipboard API when the page is not a
  // secure context (plain http on a LAN address).
  function fallbackCopy(text) {
    var area = document.createElement("textarea");
    area.value = text;
    area.setAttribute("readonly", "");
    area.style.position = "fixed";
    area.style.opacity = "0";
    document.body.appendChild(area);
    area.select();
    var ok = false;
    try { ok = document.execCommand("copy"); } finally { area.remove(); }
    if (!ok) { throw new Error("copy refused"); }
  }

  function copyText(text) {
    if (navigator.clipboard && window.isSecureContext) {
      return navigator.clipboard.writeText(text).catch(function () { fallbackCopy(text); });
    }
    return new Promise(function (resolve) { fallbackCopy(text); resolve(); });
  }

  // The feedback goes to a live region next to the button so screen readers
  // hear it; the button text changes for everyone else.
  function announce(button, message) {
    var target = button.getAttribute("data-feedback");
    var region = target && document.getElementById(target);
    if (region) { region.textContent = message; }
  }

  // The payment panel is replaced on every poll, and a live region that is
  // itself replaced is not reliably read out. So a stable, visually hidden
  // region says each *change* of status once ("Payment status: Token issued").
  var announcer = null;
  var lastStatus = null;
  function paymentStatus() {
    var panel = document.getElementById("payment-status");
    return panel ? panel.getAttribute("data-status") : null;
  }
  document.addEventListener("DOMContentLoaded", function () {
    announcer = document.createElement("div");
    announcer.id = "status-announcer";
    announcer.className = "visually-hidden";
    announcer.setAttribute("aria-live", "polite");
    document.body.appendChild(announcer);
    lastStatus = paymentStatus();
  });
  document.addEventListener("htmx:afterSettle", function () {
    var status = paymentStatus();
    if (!announcer || !status || status === lastStatus) { return; }
    lastStatus = status;
    var label = document.querySelector("#payment-status [data-status-label]");
    announcer.textContent = "Payment status: " + (label ? label.textContent.trim() : status) + ".";
  });

  document.addEventListener("click", function (event) {
    var copy = event.target.closest("[data-copy]");
    if (copy) {
      var label = copy.getAttribute("data-label") || copy.textContent;
      copy.setAttribute("data-label", label);
      copyText(copy.getAttribute("data-copy")).then(function () {
        copy.textContent = "Copied";
        // Each button says what it copied (a token, an account number).
        announce(copy, copy.getAttribute("data-copied") || "Copied to the clipboard.");
      }, function () {
        announce(copy, "Could not copy: select the text and copy it by hand.");
      });
      window.setTimeout(function () { copy.textContent = label; }, 4000);
      return;
    }
    if (event.target.closest("[data-print]")) {
      window.print();
      return;
    }
    var share = event.target.closest("[data-share-text]");
    if (share && navigator.share) {
      navigator.share({ title: share.getAttribute("data-share-title") || document.title,
                        text: share.getAttribute("data-share-text") }).catch(function () {});
      return;
    }
    // "Switch to prepaid/postpaid": tick the other type; htmx checks the
    // meter again (its trigger listens for the radio's change).
    var switcher = event.target.closest("[data-switch-meter-type]");
    if (switcher) {
      var radio = document.querySelector('input[name="meter_type"][value="' +
                                         switcher.getAttribute("data-switch-meter-type") + '"]');
      if (radio) {
        event.preventDefault();
        radio.checked = true;
        radio.dispatchEvent(new Event("change", { bubbles: true }));
        radio.focus();
      }
      return;
    }
  });

  // The pay form: quick-amount chips fill the amount box, and the button
  // states the amount ("Continue · ₦2,000.00").
  var naira = window.Intl ? new Intl.NumberFormat("en-NG", { style: "currency", currency: "NGN" }) : null;
  function amountKobo(text) {
    var cleaned = (text || "").replace(/[\s,₦]/g, "").replace(/^NGN/i, "");
    if (!/^\d{1,12}(\.\d{1,2})?$/.test(cleaned)) { return null; }
    var parts = cleaned.split(".");
    return parseInt(parts[0], 10) * 100 + (parts[1] ? parseInt((parts[1] + "0").slice(0, 2), 10) : 0);
  }
  function updatePayButton() {
    var input = document.getElementById("amount");
    var button = document.querySelector("[data-pay-button]");
    if (!input || !button) { return; }
    var kobo = amountKobo(input.value);
    button.textContent = (kobo && naira) ? "Continue · " + naira.format(kobo / 100) : "Continue to review";
  }
  document.addEventListener("change", function (event) {
    var chip = event.target.closest("[data-quick-amount]");
    if (chip) {
      var input = document.getElementById("amount");
      if (input) { input.value = chip.getAttribute("data-quick-amount"); }
      updatePayButton();
    }
  });
  document.addEventListener("input", function (event) {
    if (event.target.id !== "amount") { return; }
    var chips = document.querySelectorAll("[data-quick-amount]");
    for (var i = 0; i < chips.length; i++) {
      chips[i].checked = chips[i].getAttribute("data-quick-amount") === event.target.value.trim();
    }
    updatePayButton();
  });
  document.addEventListener("DOMContentLoaded", function () {
    if (navigator.share) { document.documentElement.classList.add("can-share"); }
    updatePayButton();
  });
})();
