// Loaded before FullCalendar. FullCalendar 6 writes its stylesheet into a <style> element of its
// own, which the page's Content-Security-Policy forbids (no inline styles), and then fails. It
// looks that element up by the selector style[data-fullcalendar] and uses only its CSSOM sheet:
// here it finds a constructed stylesheet instead (CSSOM, which the policy allows), adopted by the
// document. The holder is not an HTML <style> element, so the policy has nothing to block.
// Left out: the icon font of its toolbar buttons (a data: font, which the policy also forbids);
// the console has its own buttons.
(() => {
  const sheet = new CSSStyleSheet();
  const insert = sheet.insertRule.bind(sheet);
  sheet.insertRule = (rule, index) =>
    rule.trimStart().startsWith("@font-face") ? 0 : insert(rule, Math.min(index, sheet.cssRules.length));
  document.adoptedStyleSheets = [...document.adoptedStyleSheets, sheet];
  const holder = document.createElementNS("urn:packline:fullcalendar-stylesheet", "style");
  holder.setAttribute("data-fullcalendar", "");
  Object.defineProperty(holder, "sheet", { value: sheet });
  document.head.append(holder);
})();
