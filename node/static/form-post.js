// OAuth 2.0 Form Post Response Mode: send the response form to the client as soon as the page is ready.
// Served from our own origin because the page's Content-Security-Policy allows no inline script.
(function () {
  "use strict";
  function submitResponse() {
    var form = document.getElementById("form-post");
    if (form) {
      form.submit();
    }
  }
  if (document.readyState === "loading") {
    document.addEventListener("DOMContentLoaded", submitResponse);
  } else {
    submitResponse();
  }
})();
