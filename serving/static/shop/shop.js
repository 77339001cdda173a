// carousel demo shop: plain JavaScript, no build step, no external resources.
//
// The page calls the public API only (GET /v1/recommendations, GET /v1/items/{id}/similar,
// POST /v1/events) plus two read-only helpers of its own (GET /shop/api/shoppers, GET /shop/api/items).
// After every event the shelves are asked again, so the real-time overlay is visible at once.
"use strict";

(() => {
  const N = 10;
  const MAX_LOG = 30;
  const KEYS = {
    session: "carousel-shop-session",
    mode: "carousel-shop-mode",
    shopper: "carousel-shop-shopper",
    country: "carousel-shop-country",
  };
  // Reason codes get their own colour in the stylesheet; anything else is drawn plainly.
  const REASON_CLASS = /^[a-z][a-z0-9_]{0,40}$/;

  const state = {
    mode: "shopper",
    shoppers: [],
    sessionId: "",
    anchor: null, // the item whose "Goes well with" shelf is shown
    catalog: new Map(), // item_id -> {title, category, price, in_stock} or null when the lake has no row
    carts: new Map(), // subject -> Map(item_id -> time added, ms): what this page put in the cart
    abandonAfterS: 1800,
    sequence: { recommended: 0, similar: 0 },
    reminderTimer: 0,
  };

  const $ = (id) => document.getElementById(id);

  // -- small helpers -------------------------------------------------------------------------------
  function el(tag, props, ...children) {
    const node = document.createElement(tag);
    for (const [key, value] of Object.entries(props || {})) {
      if (key === "dataset") Object.assign(node.dataset, value);
      else if (key === "style") for (const [name, v] of Object.entries(value)) node.style.setProperty(name, v);
      else node[key] = value;
    }
    node.append(...children.filter((child) => child !== null && child !== undefined && child !== ""));
    return node;
  }

  function stored(key) {
    try {
      return window.sessionStorage.getItem(key);
    } catch {
      return null; // storage disabled: the page still works, it just forgets on reload
    }
  }

  function store(key, value) {
    try {
      window.sessionStorage.setItem(key, value);
    } catch {
      /* see stored() */
    }
  }

  function newSessionId() {
    // crypto.getRandomValues works on plain http too (randomUUID needs a secure context).
    const bytes = new Uint8Array(8);
    window.crypto.getRandomValues(bytes);
    return "shop-" + Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
  }

  function duration(seconds) {
    if (seconds < 120) return `${seconds} s`;
    if (seconds < 7200) return `${Math.round(seconds / 60)} min`;
    return `${Math.round(seconds / 3600)} h`;
  }

  function clock(ms) {
    return new Date(ms).toLocaleTimeString([], { hour: "2-digit", minute: "2-digit", second: "2-digit" });
  }

  function hue(text) {
    let h = 0;
    for (const ch of text) h = (h * 31 + ch.codePointAt(0)) % 360;
    return h;
  }

  function initials(name) {
    const words = name.replace(/[^\p{L}\p{N} ]/gu, " ").split(/\s+/).filter(Boolean);
    const letters = words.length > 1 ? words.slice(0, 2).map((w) => w[0]) : [(words[0] || "?").slice(0, 2)];
    return letters.join("").toUpperCase();
  }

  // Items of one category share a colour family; each item shifts it a little.
  function itemHue(itemId, category) {
    return (hue(category || itemId) + (hue(itemId) % 50) - 25 + 360) % 360;
  }

  function showNotice(text) {
    const notice = $("notice");
    notice.textContent = text;
    notice.hidden = !text;
  }

  // A signed-in shopper's token (from the store's backend: here /shop/api/shoppers) goes with every
  // request made for them; the API serves a user_id without it as an anonymous visitor.
  function identity(who) {
    const shopper = who && who.user_id ? state.shoppers.find((s) => s.user_id === who.user_id) : null;
    return shopper && shopper.shopper_token ? { "X-Shopper-Token": shopper.shopper_token } : {};
  }

  async function getJson(url, who) {
    const response = await fetch(url, { headers: { Accept: "application/json", ...identity(who) } });
    const body = await response.json().catch(() => ({}));
    if (!response.ok) throw new Error(body.error || `${response.status} ${response.statusText}`);
    return body;
  }

  // -- who is browsing -----------------------------------------------------------------------------
  function currentShopper() {
    const id = $("shopper").value;
    return state.shoppers.find((s) => s.user_id === id) || null;
  }

  // {user_id, country, key} of whoever browses now; null when "known shopper" is picked but none exists.
  function subject() {
    if (state.mode === "shopper") {
      const shopper = currentShopper();
      return shopper ? { user_id: shopper.user_id, country: shopper.country, key: `u:${shopper.user_id}` } : null;
    }
    return { user_id: null, country: $("country").value || null, key: `s:${state.sessionId}` };
  }

  function cartOf(who) {
    if (!state.carts.has(who.key)) state.carts.set(who.key, new Map());
    return state.carts.get(who.key);
  }

  // -- catalog: titles and prices for the cards (optional: cards fall back to the item id) ---------
  async function describe(items) {
    const missing = [...new Set(items.map((i) => i.item_id))].filter((id) => !state.catalog.has(id));
    if (!missing.length) return;
    const params = new URLSearchParams();
    missing.forEach((id) => params.append("id", id));
    try {
      const body = await getJson(`/shop/api/items?${params}`);
      for (const id of missing) state.catalog.set(id, body.items[id] || null);
    } catch {
      /* no titles this time; the next load asks again */
    }
  }

  // -- rendering -----------------------------------------------------------------------------------
  function renderMeta(container, body) {
    const chips = [];
    for (const key of ["source", "variant", "version"]) {
      if (body[key] === undefined) continue; // e.g. similar items carry no variant
      const value = body[key] === null ? "none" : String(body[key]);
      chips.push(el("span", { className: `chip ${key === "version" ? "" : value}`, dataset: { key } },
        `${key}: `, el("b", {}, value)));
    }
    if (body.stale) chips.push(el("span", { className: "chip stale", dataset: { key: "stale" } }, "stale"));
    container.replaceChildren(...chips);
  }

  function actionButton(label, action, primary) {
    return el("button", { type: "button", className: primary ? "primary" : "", dataset: { action } }, label);
  }

  function card(item, rank) {
    const info = state.catalog.get(item.item_id) || null;
    const name = info && info.title ? info.title : item.item_id;
    const reason = item.reason || { code: "", text: "" };
    const reasonNode = el("p", { className: "reason" }, el("span", { className: "code" }, reason.code), reason.text);
    if (REASON_CLASS.test(reason.code)) reasonNode.classList.add(reason.code);
    const node = el(
      "article",
      { className: "card", dataset: { itemId: item.item_id, reason: reason.code } },
      el(
        "div",
        { className: "thumb", title: "What goes well with it", style: { "--hue": String(itemHue(item.item_id, info && info.category)) } },
        el("span", { className: "rank" }, String(rank)),
        initials(name),
      ),
      el(
        "div",
        { className: "card-body" },
        el("h4", { className: "title", title: name }, name),
        el("p", { className: "item-meta" }, el("code", { className: "item-id" }, item.item_id),
          info && info.category ? ` · ${info.category}` : null),
        info && Number.isFinite(info.price) ? el("p", { className: "item-meta price" }, info.price.toFixed(2)) : null,
        reasonNode,
      ),
      el(
        "div",
        { className: "actions" },
        actionButton("View", "view"),
        actionButton("Add to cart", "add_to_cart"),
        actionButton("Buy", "purchase", true),
      ),
    );
    if (item.item_id === state.anchor) node.classList.add("selected");
    return node;
  }

  function renderCards(container, items, emptyText) {
    if (!items.length) {
      container.replaceChildren(el("p", { className: "empty" }, emptyText));
      return;
    }
    container.replaceChildren(...items.map((item, index) => card(item, index + 1)));
  }

  function renderCart() {
    const who = subject();
    const cart = who ? cartOf(who) : new Map();
    const list = $("cart-items");
    const now = Date.now();
    list.replaceChildren(
      ...[...cart.entries()].map(([itemId, added]) => {
        const due = added + state.abandonAfterS * 1000;
        const info = state.catalog.get(itemId);
        return el(
          "li",
          { dataset: { itemId } },
          info && info.title ? `${info.title} ` : null,
          el("code", {}, itemId),
          " ",
          el("span", { className: "when" }, due <= now ? "· reminder due" : `· reminder from ${clock(due)}`),
          " ",
          el("button", { type: "button", className: "link", dataset: { action: "remove_from_cart" } }, "remove"),
        );
      }),
    );
    $("cart").hidden = cart.size === 0;
  }

  function logEvent(event, status, ok) {
    const log = $("activity");
    log.querySelector(".empty")?.remove();
    const info = state.catalog.get(event.item_id);
    log.prepend(
      el(
        "li",
        {},
        el("time", {}, clock(Date.now())),
        ` ${event.event_type.replace(/_/g, " ")} `,
        el("code", {}, event.item_id),
        info && info.title ? ` (${info.title})` : null,
        " ",
        el("span", { className: ok ? "status" : "status bad" }, status),
      ),
    );
    while (log.children.length > MAX_LOG) log.lastElementChild.remove();
  }

  // -- shelves -------------------------------------------------------------------------------------
  async function loadShelf(name, url, emptyText, who) {
    const seq = ++state.sequence[name];
    const section = $(name);
    section.setAttribute("aria-busy", "true");
    try {
      const body = await getJson(url, who);
      await describe(body.items);
      if (seq !== state.sequence[name]) return; // a newer request for this shelf has been sent since
      renderMeta($(`${name}-meta`), body);
      renderCards($(`${name}-cards`), body.items, emptyText);
      return body;
    } catch (error) {
      if (seq === state.sequence[name]) showNotice(`${section.querySelector("h2").textContent}: ${error.message}`);
    } finally {
      if (seq === state.sequence[name]) {
        section.setAttribute("aria-busy", "false");
        section.dataset.loads = String(Number(section.dataset.loads || 0) + 1);
      }
    }
  }

  async function loadRecommended() {
    const who = subject();
    if (!who) {
      renderCards($("recommended-cards"), [], "No shopper with a personal list: browse as an anonymous visitor.");
      $("recommended-meta").replaceChildren();
      return;
    }
    const params = new URLSearchParams({ n: String(N), session_id: state.sessionId });
    if (who.user_id) params.set("user_id", who.user_id);
    if (who.country) params.set("country", who.country);
    await loadShelf("recommended", `/v1/recommendations?${params}`, "This list is empty.", who);
    renderCart();
    scheduleReminder();
  }

  async function loadSimilar() {
    const anchor = state.anchor;
    const section = $("similar");
    if (!anchor) {
      section.hidden = true;
      return;
    }
    section.hidden = false;
    const info = state.catalog.get(anchor);
    $("anchor-name").textContent = (info && info.title) || anchor;
    await loadShelf("similar", `/v1/items/${encodeURIComponent(anchor)}/similar?n=${N}`, "Nothing goes with it yet.");
  }

  async function showSimilar(itemId) {
    state.anchor = itemId;
    for (const node of document.querySelectorAll(".card")) {
      node.classList.toggle("selected", node.dataset.itemId === itemId);
    }
    await loadSimilar();
    $("similar").scrollIntoView({ block: "nearest" }); // it opens below the fold on small screens
  }

  function reloadShelves() {
    return Promise.all([loadRecommended(), loadSimilar()]);
  }

  // A cart left alone for the abandonment delay comes back as a reminder: ask again when one is due.
  function scheduleReminder() {
    window.clearTimeout(state.reminderTimer);
    const who = subject();
    if (!who) return;
    const now = Date.now();
    const due = [...cartOf(who).values()].map((added) => added + state.abandonAfterS * 1000).filter((t) => t > now);
    if (!due.length) return;
    const wait = Math.min(...due) - now + 500;
    if (wait < 2 ** 31 - 1) state.reminderTimer = window.setTimeout(() => reloadShelves().catch(report), wait);
  }

  // -- events --------------------------------------------------------------------------------------
  async function sendEvent(kind, itemId, button) {
    const who = subject();
    if (!who) return;
    const info = state.catalog.get(itemId);
    const event = {
      user_id: who.user_id,
      session_id: state.sessionId,
      item_id: itemId,
      event_type: kind,
      ts: new Date().toISOString(),
      quantity: 1,
      price: info && Number.isFinite(info.price) ? info.price : 1.0,
      country: who.country,
    };
    if (button) button.disabled = true;
    try {
      const response = await fetch("/v1/events", {
        method: "POST",
        headers: { "Content-Type": "application/json", Accept: "application/json", ...identity(who) },
        body: JSON.stringify({ events: [event] }),
      });
      const body = await response.json().catch(() => ({}));
      if (!response.ok) throw new Error(body.error || `${response.status} ${response.statusText}`);
      logEvent(event, `${response.status} accepted`, true);
    } catch (error) {
      logEvent(event, `refused: ${error.message}`, false);
      showNotice(`The event was not accepted: ${error.message}`);
      return;
    } finally {
      if (button) button.disabled = false;
    }
    const cart = cartOf(who);
    if (kind === "add_to_cart") cart.set(itemId, Date.now());
    if (kind === "purchase" || kind === "remove_from_cart") cart.delete(itemId);
    if (kind === "view") {
      await Promise.all([loadRecommended(), showSimilar(itemId)]);
      return;
    }
    await reloadShelves();
  }

  function onShelfClick(event) {
    const cardNode = event.target.closest(".card");
    if (!cardNode) return;
    const button = event.target.closest("button[data-action]");
    if (button) sendEvent(button.dataset.action, cardNode.dataset.itemId, button).catch(report);
    else if (event.target.closest(".thumb, .title")) showSimilar(cardNode.dataset.itemId).catch(report);
  }

  function onCartClick(event) {
    const button = event.target.closest("button[data-action]");
    const row = event.target.closest("li[data-item-id]");
    if (button && row) sendEvent(button.dataset.action, row.dataset.itemId, button).catch(report);
  }

  function report(error) {
    showNotice(`Something went wrong: ${error && error.message ? error.message : error}`);
  }

  // -- set-up --------------------------------------------------------------------------------------
  async function loadShoppers() {
    const body = await getJson("/shop/api/shoppers");
    state.shoppers = body.shoppers;
    state.abandonAfterS = body.cart_abandon_after_s;
    $("abandon-after").textContent = duration(body.cart_abandon_after_s);
    const picker = $("shopper");
    if (body.shoppers.length) {
      picker.replaceChildren(
        ...body.shoppers.map((s) => {
          const notes = [s.country || "no country"];
          if (s.variant === "holdout") notes.push("holdout");
          if (!s.consent_personalization) notes.push("no consent");
          return el("option", { value: s.user_id }, `${s.user_id} · ${notes.join(" · ")}`);
        }),
      );
    } else {
      picker.replaceChildren(el("option", { value: "", disabled: true }, "(no shopper has a personal list)"));
    }
    const countries = $("country");
    countries.append(...body.countries.map((c) => el("option", { value: c }, c)));
    if (!body.version) showNotice("No recommendation version is live yet: run the refresh (`make demo` does it).");
  }

  function applyMode() {
    for (const radio of document.querySelectorAll('input[name="mode"]')) radio.checked = radio.value === state.mode;
    $("shopper-field").hidden = state.mode !== "shopper";
    $("country-field").hidden = state.mode !== "anonymous";
    $("session-id").textContent = state.sessionId;
  }

  function restoreChoices() {
    const shopper = stored(KEYS.shopper);
    if (shopper && state.shoppers.some((s) => s.user_id === shopper)) $("shopper").value = shopper;
    const country = stored(KEYS.country);
    if (country && [...$("country").options].some((o) => o.value === country)) $("country").value = country;
    const mode = stored(KEYS.mode);
    state.mode = mode === "anonymous" || !state.shoppers.length ? "anonymous" : "shopper";
  }

  function onWhoChanged() {
    state.anchor = null;
    showNotice("");
    store(KEYS.mode, state.mode);
    store(KEYS.shopper, $("shopper").value);
    store(KEYS.country, $("country").value);
    applyMode();
    reloadShelves().catch(report);
  }

  async function init() {
    state.sessionId = stored(KEYS.session) || newSessionId();
    store(KEYS.session, state.sessionId);
    for (const radio of document.querySelectorAll('input[name="mode"]')) {
      radio.addEventListener("change", () => {
        state.mode = radio.value;
        onWhoChanged();
      });
    }
    $("shopper").addEventListener("change", onWhoChanged);
    $("country").addEventListener("change", onWhoChanged);
    $("who").addEventListener("submit", (event) => event.preventDefault());
    $("new-session").addEventListener("click", () => {
      state.sessionId = newSessionId();
      store(KEYS.session, state.sessionId);
      onWhoChanged();
    });
    $("reload").addEventListener("click", () => reloadShelves().catch(report));
    $("close-similar").addEventListener("click", () => {
      state.anchor = null;
      loadSimilar().catch(report);
    });
    $("recommended-cards").addEventListener("click", onShelfClick);
    $("similar-cards").addEventListener("click", onShelfClick);
    $("cart-items").addEventListener("click", onCartClick);
    try {
      await loadShoppers();
    } catch (error) {
      showNotice(`Shoppers could not be listed: ${error.message}`);
    }
    restoreChoices();
    applyMode();
    await loadRecommended();
    document.body.dataset.ready = "true";
  }

  init().catch(report);
})();
