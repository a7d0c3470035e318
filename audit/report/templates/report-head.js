(function () {
  "use strict";
  // Test hook and diagnostics: collect every script error, failed resource and blocked
  // request from the first moment, so report.js can publish them as body[data-errors].
  var errors = [];
  window.__auditErrors = errors;
  window.addEventListener("error", function (e) {
    var t = e.target;
    if (t && t !== window && t.tagName) {
      errors.push("failed to load <" + t.tagName.toLowerCase() + ">");
      return;
    }
    errors.push(String(e.message || "script error") + (e.lineno ? " (line " + e.lineno + ")" : ""));
  }, true);
  window.addEventListener("unhandledrejection", function (e) {
    errors.push("unhandled rejection: " + String(e.reason));
  });
  document.addEventListener("securitypolicyviolation", function (e) {
    errors.push("blocked by the content security policy: " + e.violatedDirective + " " + e.blockedURI);
  });
})();
