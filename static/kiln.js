// kiln's pages, enhanced. Every page works without this script: the request form posts to
// /ui/container and build pages show all their sections one after another. With it, the form
// searches packages, collects them as chips and follows the build live over Server-Sent
// Events, and build pages show their recipe, environment, lock and log as tabs with copy and
// download buttons. Plain browser JavaScript, no build step: it is served as written.
'use strict';

document.documentElement.classList.add('js');

(function () {
  // ---------------------------------------------------------------- shared helpers

  /** Makes an element with a class and text; text goes in as text, never as HTML. */
  function el(tag, className, text) {
    const node = document.createElement(tag);
    if (className) node.className = className;
    if (text !== undefined && text !== null) node.textContent = text;
    return node;
  }

  /**
   * Copies text. The Clipboard API exists only in secure contexts (https, localhost), and
   * kiln is often served over plain http inside a site, so fall back to execCommand there.
   */
  async function copyText(text) {
    if (navigator.clipboard && window.isSecureContext) {
      try {
        await navigator.clipboard.writeText(text);
        return true;
      } catch (_) {
        // Denied (e.g. no focus): try the old way below.
      }
    }
    const area = el('textarea');
    area.value = text;
    area.setAttribute('readonly', '');
    area.style.position = 'fixed';
    area.style.top = '0';
    area.style.opacity = '0';
    document.body.appendChild(area);
    area.select();
    let copied = false;
    try {
      copied = document.execCommand('copy');
    } catch (_) {
      copied = false;
    }
    area.remove();
    return copied;
  }

  /** Shows a word on a button for a moment, then its own label again. */
  function flash(button, word) {
    if (!button.dataset.label) button.dataset.label = button.textContent;
    button.textContent = word;
    clearTimeout(button.flashTimer);
    button.flashTimer = setTimeout(() => {
      button.textContent = button.dataset.label;
    }, 1500);
  }

  // Any `.copy` button copies the text of the element its `data-copy` names (or, for the
  // build page's panels, the element the script attached to it).
  document.addEventListener('click', async (event) => {
    const button = event.target.closest('button.copy');
    if (!button) return;
    const target = button.copyTarget || document.getElementById(button.dataset.copy || '');
    if (!target) return;
    flash(button, (await copyText(target.textContent)) ? 'Copied' : 'Copy failed');
  });

  /** "4.2 s", "3 min 05 s": how long something has taken. */
  function duration(millis) {
    const seconds = Math.max(0, Math.floor(millis / 1000));
    if (seconds < 60) return (Math.max(0, millis) / 1000).toFixed(1) + ' s';
    const minutes = Math.floor(seconds / 60);
    const rest = String(seconds % 60).padStart(2, '0');
    if (minutes < 60) return minutes + ' min ' + rest + ' s';
    return Math.floor(minutes / 60) + ' h ' + String(minutes % 60).padStart(2, '0') + ' min ' + rest + ' s';
  }

  // ---------------------------------------------------------------- the request page

  /**
   * Characters a package entry can hold (conda match specs, PEP 508 names, versions and
   * extras). Only a first check, so a typo is caught before it becomes a chip; kiln itself
   * checks every entry again when the form is sent.
   */
  const ENTRY = /^[A-Za-z0-9_.\-=<>!~*,:[\]/+@]+$/;

  function initRequest(form) {
    const search = document.getElementById('search');
    const results = document.getElementById('results');
    const chips = document.getElementById('chips');
    const error = document.getElementById('entry-error');
    const button = document.getElementById('get-container');
    const card = document.getElementById('result');
    const status = document.getElementById('status');
    const elapsed = document.getElementById('elapsed');
    const imageUri = document.getElementById('image-uri');
    const details = document.getElementById('details');
    const downloadRow = document.getElementById('download-row');
    const download = document.getElementById('download');
    const reason = document.getElementById('reason');
    const logBox = document.getElementById('log-box');
    const log = document.getElementById('log');

    function showError(message) {
      error.textContent = message;
      error.hidden = false;
    }

    function hideError() {
      error.textContent = '';
      error.hidden = true;
    }

    // ---- chips

    function entries() {
      return Array.from(chips.querySelectorAll('.chip')).map((chip) => chip.dataset.entry);
    }

    /** Adds a chip (once per entry); its hidden input is what a plain form post sends. */
    function addChip(entry) {
      if (entries().includes(entry)) return;
      const chip = el('span', 'chip');
      chip.dataset.entry = entry;
      chip.append(el('span', 'chip-text', entry));
      const input = el('input');
      input.type = 'hidden';
      input.name = 'package';
      input.value = entry;
      chip.append(input);
      const remove = el('button', 'remove', '×');
      remove.type = 'button';
      remove.title = 'Remove ' + entry;
      remove.setAttribute('aria-label', 'Remove ' + entry);
      chip.append(remove);
      chips.append(chip);
    }

    chips.addEventListener('click', (event) => {
      const remove = event.target.closest('button.remove');
      if (!remove) return;
      remove.closest('.chip').remove();
      search.focus();
    });

    /**
     * Turns what is typed or pasted into chips: whitespace separates entries. Entries that
     * cannot be right stay in the box with a message; the good ones become chips. Returns
     * whether everything was taken.
     */
    function addTyped() {
      const words = search.value.split(/\s+/).filter(Boolean);
      const bad = words.filter((word) => !ENTRY.test(word));
      words.filter((word) => ENTRY.test(word)).forEach(addChip);
      if (bad.length) {
        search.value = bad.join(' ');
        showError(
          bad.map((word) => '`' + word + '`').join(', ') +
            (bad.length === 1 ? ' is not a package entry' : ' are not package entries') +
            ': use letters, digits and . _ - = < > ! ~ * , : [ ] / + only, e.g. samtools=1.21 or pip:requests==2.32.3.'
        );
        return false;
      }
      search.value = '';
      hideError();
      clearResults();
      return true;
    }

    search.addEventListener('keydown', (event) => {
      if (event.key === 'Enter') {
        // Enter adds what is typed; on an empty box it sends the form, as Enter usually does.
        if (search.value.trim()) {
          event.preventDefault();
          addTyped();
        }
      } else if (event.key === 'Escape') {
        clearResults();
      } else if (event.key === 'ArrowDown' && !results.hidden) {
        const first = results.querySelector('button.add');
        if (first) {
          event.preventDefault();
          first.focus();
        }
      }
    });

    // ---- search

    let debounce = null;
    let inFlight = null;

    function clearResults() {
      if (inFlight) inFlight.abort();
      inFlight = null;
      results.replaceChildren();
      results.hidden = true;
    }

    search.addEventListener('input', () => {
      clearTimeout(debounce);
      debounce = setTimeout(runSearch, 150);
    });

    /** Asks kiln's search; anything but a good answer (a 404 from an older kiln, an error,
     * no network) simply shows no results, since typing specs by hand always works. */
    async function runSearch() {
      const query = search.value.trim();
      if (inFlight) inFlight.abort();
      if (query.length < 2 || /\s/.test(query)) {
        clearResults();
        return;
      }
      const controller = new AbortController();
      inFlight = controller;
      let found;
      try {
        const response = await fetch('/api/v1/search?q=' + encodeURIComponent(query), {
          signal: controller.signal,
          headers: { Accept: 'application/json' },
        });
        found = response.ok ? await response.json() : null;
      } catch (_) {
        found = null;
      }
      if (controller.signal.aborted) return;
      inFlight = null;
      showResults(found || {});
    }

    function condaEntry(item) {
      const name = (item.channel ? item.channel + '::' : '') + item.name;
      return item.version ? name + '=' + item.version : name;
    }

    function pypiEntry(name, version) {
      return 'pip:' + name + (version ? '==' + version : '');
    }

    function resultItem(entry, name, source, version, summary) {
      const item = el('li', 'result');
      item.dataset.entry = entry;
      const main = el('div', 'result-main');
      const title = el('div', 'result-title');
      title.append(el('span', 'result-name', name), el('span', 'source', source));
      main.append(title);
      if (summary) main.append(el('div', 'summary', summary));
      item.append(main);
      const side = el('div', 'result-side');
      if (version) side.append(version);
      const add = el('button', 'add', 'Add');
      add.type = 'button';
      add.setAttribute('aria-label', 'Add ' + name);
      side.append(add);
      item.append(side);
      return item;
    }

    function showResults(found) {
      const items = [];
      for (const hit of found.conda || []) {
        items.push(
          resultItem(condaEntry(hit), hit.name, hit.channel || 'conda', el('span', 'version', hit.version || ''), hit.summary)
        );
      }
      for (const hit of found.pypi || []) {
        const versions = Array.isArray(hit.versions) ? hit.versions : [];
        let version;
        if (versions.length > 1) {
          version = el('select', 'version');
          version.setAttribute('aria-label', hit.name + ' version');
          for (const v of versions) {
            const option = el('option', null, v);
            option.value = v;
            option.selected = v === hit.version;
            version.append(option);
          }
        } else {
          version = el('span', 'version', hit.version || '');
        }
        const item = resultItem(pypiEntry(hit.name, hit.version), hit.name, 'PyPI', version, hit.summary);
        if (version.tagName === 'SELECT') {
          version.addEventListener('change', () => {
            item.dataset.entry = pypiEntry(hit.name, version.value);
          });
        }
        items.push(item);
      }
      results.replaceChildren(...items);
      results.hidden = items.length === 0;
    }

    results.addEventListener('click', (event) => {
      const add = event.target.closest('button.add');
      if (!add) return;
      addChip(add.closest('li').dataset.entry);
      hideError();
      // The query did its job; an empty box is ready for the next package (and is not sent
      // along as an entry of its own).
      search.value = '';
      clearResults();
      search.focus();
    });

    // ---- format and platforms

    const platformBoxes = Array.from(form.querySelectorAll('input[name=platform]'));

    function isSif() {
      const checked = form.querySelector('input[name=format]:checked');
      return Boolean(checked && checked.value === 'sif');
    }

    /** A SIF holds one platform: with sif chosen, the platform boxes act as a choice of one. */
    function onFormat() {
      form.classList.toggle('sif', isSif());
      if (!isSif()) return;
      const checked = platformBoxes.filter((box) => box.checked);
      checked.slice(1).forEach((box) => {
        box.checked = false;
      });
      if (checked.length === 0 && platformBoxes[0]) platformBoxes[0].checked = true;
    }

    form.querySelectorAll('input[name=format]').forEach((radio) => radio.addEventListener('change', onFormat));
    platformBoxes.forEach((box) =>
      box.addEventListener('change', () => {
        if (isSif() && box.checked) {
          platformBoxes.filter((other) => other !== box).forEach((other) => {
            other.checked = false;
          });
        }
      })
    );
    onFormat();

    // ---- submitting and following the build

    let following = null;

    function stopFollowing() {
      if (!following) return;
      if (following.source) following.source.close();
      clearInterval(following.timer);
      following = null;
    }

    function setStatus(word, kind) {
      status.textContent = word;
      status.className = 'badge ' + kind;
    }

    /** For a SIF, the record's first output has the https link to the file. */
    async function showDownload(id) {
      try {
        const response = await fetch('/api/v1/builds/' + encodeURIComponent(id), {
          headers: { Accept: 'application/json' },
        });
        if (!response.ok) return;
        const record = await response.json();
        const url = record.outputs && record.outputs[0] && record.outputs[0].download_url;
        // Only web links: an href is where a `javascript:` URL would run.
        if (url && /^https?:\/\//.test(url)) {
          download.href = url;
          downloadRow.hidden = false;
        }
      } catch (_) {
        // The record is optional here; the build page links the file too.
      }
    }

    function follow(id, format, started) {
      const source = new EventSource('/api/v1/builds/' + encodeURIComponent(id) + '/log');
      const timer = setInterval(() => {
        elapsed.textContent = duration(Date.now() - started);
      }, 200);
      following = { source, timer };
      // A reconnect replays the log from the start, so start the text over with it.
      source.addEventListener('open', () => {
        log.textContent = '';
      });
      source.addEventListener('log', (event) => {
        logBox.hidden = false;
        const atEnd = log.scrollTop + log.clientHeight >= log.scrollHeight - 8;
        log.textContent += event.data;
        if (atEnd) log.scrollTop = log.scrollHeight;
      });
      source.addEventListener('done', (event) => {
        stopFollowing();
        elapsed.textContent = duration(Date.now() - started);
        let done = {};
        try {
          done = JSON.parse(event.data);
        } catch (_) {
          done = {};
        }
        if (done.succeeded) {
          setStatus('Succeeded', 'succeeded');
          if (format === 'sif') showDownload(id);
        } else {
          setStatus('Failed', 'failed');
          reason.textContent = done.reason || 'The build failed; its log says why.';
          reason.hidden = false;
        }
      });
      source.addEventListener('error', () => {
        // EventSource reconnects by itself; only a closed stream is final.
        if (source.readyState === EventSource.CLOSED && following && following.source === source) {
          stopFollowing();
          reason.textContent = 'The log stream closed early; Build details has the whole story.';
          reason.hidden = false;
        }
      });
    }

    function showAnswer(answer, format, started) {
      stopFollowing();
      card.hidden = false;
      imageUri.textContent = answer.image;
      log.textContent = '';
      logBox.hidden = true;
      reason.hidden = true;
      downloadRow.hidden = true;
      download.removeAttribute('href');
      const build = answer.build;
      details.hidden = !build;
      if (build) details.href = '/view/builds/' + encodeURIComponent(build.id);
      if (answer.cached) {
        setStatus('Cached', 'succeeded');
        elapsed.textContent = 'ready in ' + duration(Date.now() - started);
        if (format === 'sif' && build) showDownload(build.id);
      } else {
        setStatus('Building', 'building');
        elapsed.textContent = duration(0);
        follow(build.id, format, started);
      }
      card.scrollIntoView({ block: 'nearest', behavior: 'smooth' });
    }

    form.addEventListener('submit', async (event) => {
      event.preventDefault();
      if (search.value.trim() && !addTyped()) return;
      const packages = entries();
      if (packages.length === 0) {
        showError('Add at least one package: search above, or type a spec such as samtools=1.21 and press Enter.');
        search.focus();
        return;
      }
      const checkedFormat = form.querySelector('input[name=format]:checked');
      const format = checkedFormat ? checkedFormat.value : 'docker';
      const platforms = platformBoxes.filter((box) => box.checked).map((box) => box.value);
      // The page carries kiln's configured channels: what the search offers is what gets solved.
      const channels = Array.from(form.querySelectorAll('input[name=channel]')).map((input) => input.value);
      const body = { packages, channels, format, platforms };
      // Sent only when given, so a request on the default base is the same request as before.
      const baseField = form.querySelector('input[name=base]');
      const base = baseField ? baseField.value.trim() : '';
      if (base) body.base = base;
      hideError();
      button.disabled = true;
      const started = Date.now();
      let response;
      let answer = null;
      try {
        response = await fetch('/api/v1/images', {
          method: 'POST',
          headers: { 'Content-Type': 'application/json', Accept: 'application/json' },
          body: JSON.stringify(body),
        });
        answer = await response.json().catch(() => null);
      } catch (err) {
        showError('kiln could not be reached: ' + err.message);
        return;
      } finally {
        button.disabled = false;
      }
      if (!response.ok || !answer) {
        showError((answer && answer.message) || 'kiln answered ' + response.status + '.');
        search.focus();
        return;
      }
      showAnswer(answer, format, started);
    });
  }

  // ---------------------------------------------------------------- the build page

  /** Turns the build page's sections into tabs, each with copy and download buttons. */
  function initTabs(container) {
    const panels = Array.from(container.querySelectorAll(':scope > .panel'));
    if (panels.length === 0) return;
    const list = el('div', 'tablist');
    list.setAttribute('role', 'tablist');
    const tabs = panels.map((panel) => {
      const tab = el('button', 'tab', panel.dataset.title);
      tab.type = 'button';
      tab.id = 'tab-' + panel.id;
      tab.setAttribute('role', 'tab');
      tab.setAttribute('aria-controls', panel.id);
      panel.setAttribute('role', 'tabpanel');
      panel.setAttribute('aria-labelledby', tab.id);
      const pre = panel.querySelector('pre');
      if (pre) {
        const tools = el('div', 'panel-tools');
        const copy = el('button', 'copy', 'Copy');
        copy.type = 'button';
        copy.copyTarget = pre;
        const save = el('button', 'download', 'Download');
        save.type = 'button';
        save.title = 'Save as ' + panel.dataset.filename;
        save.addEventListener('click', () => {
          const url = URL.createObjectURL(new Blob([pre.textContent], { type: 'text/plain' }));
          const link = el('a');
          link.href = url;
          link.download = panel.dataset.filename || panel.id + '.txt';
          document.body.append(link);
          link.click();
          link.remove();
          setTimeout(() => URL.revokeObjectURL(url), 1000);
        });
        tools.append(copy, save);
        panel.prepend(tools);
      }
      list.append(tab);
      return tab;
    });
    container.prepend(list);
    container.classList.add('tabbed');

    function select(id, focus) {
      panels.forEach((panel, i) => {
        const chosen = panel.id === id;
        panel.hidden = !chosen;
        tabs[i].setAttribute('aria-selected', String(chosen));
        tabs[i].tabIndex = chosen ? 0 : -1;
        if (chosen && focus) tabs[i].focus();
      });
      // Remembered in the URL without an element id, so the page's reloads (while the build
      // runs) keep the tab and do not jump.
      history.replaceState(null, '', '#show=' + id);
    }

    list.addEventListener('click', (event) => {
      const tab = event.target.closest('.tab');
      if (tab) select(tab.getAttribute('aria-controls'), false);
    });
    list.addEventListener('keydown', (event) => {
      const at = tabs.indexOf(document.activeElement);
      if (at < 0) return;
      const step = { ArrowRight: 1, ArrowLeft: -1 }[event.key];
      if (!step) return;
      event.preventDefault();
      select(panels[(at + step + panels.length) % panels.length].id, true);
    });

    const asked = /^#show=(.+)$/.exec(location.hash);
    const known = asked && panels.some((panel) => panel.id === asked[1]);
    // A running or failed build is about its log; a finished one about its recipe.
    select(known ? asked[1] : container.dataset.succeeded === 'yes' ? panels[0].id : panels[panels.length - 1].id, false);
    const log = panels[panels.length - 1].querySelector('pre');
    if (log && container.dataset.succeeded !== 'yes') log.scrollTop = log.scrollHeight;
  }

  const form = document.getElementById('request');
  if (form) initRequest(form);
  const tabs = document.querySelector('.tabs');
  if (tabs) initTabs(tabs);
})();
