// Re-run a page's loader every few seconds while the tab is visible.

/** Calls load() now and every `seconds` while the tab is shown; returns a stop function. */
export function every(seconds, load) {
  let timer = null;
  let stopped = false;
  const tick = async () => {
    timer = null;
    if (stopped) return;
    if (!document.hidden) {
      try {
        await load();
      } catch (error) {
        console.error(error);
      }
    }
    if (!stopped && !document.hidden) timer = setTimeout(tick, seconds * 1000);
  };
  const visibility = () => {
    if (!document.hidden && timer === null && !stopped) tick();
  };
  document.addEventListener('visibilitychange', visibility);
  tick();
  return () => {
    stopped = true;
    clearTimeout(timer);
    document.removeEventListener('visibilitychange', visibility);
  };
}
