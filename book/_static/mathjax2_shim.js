/* The ipywidgets HTML manager typesets widget labels with MathJax 2's API, MathJax.Hub.Queue(["Typeset",
   MathJax.Hub, element]); this site runs MathJax 3, which has no Hub. Map that one call onto MathJax 3.
   (MathJax is loaded with `defer`, so it is there when the document has been parsed.) */
document.addEventListener("DOMContentLoaded", function () {
  var mj = window.MathJax;
  if (!mj || mj.Hub || !mj.startup || !mj.typesetPromise) return;
  mj.Hub = {
    Queue: function (job) {
      var element = job && job[2];
      mj.startup.promise = mj.startup.promise.then(function () {
        return mj.typesetPromise(element ? [element] : undefined);
      });
    }
  };
});
