// 1,000 tasks of step "Big" through the page's RunStream.receive, as the server sends
// them: three transitions and a metric each (plus a repeated id that must be dropped),
// half of them finished. Resolves to the number of step renders it caused.
(() => {
        const s = window.__flowfedStream;
        const before = window.__flowfedRenders;
        let id = s.lastId;
        for (let i = 0; i < 1000; i++) {
          const base = {run_id: s.runId, task_id: "big" + i, ts: Date.now() / 1000};
          const p = {step: "Big", tool: "flowfed.logistic_regression", node: "node-" + (i % 7), round: 3, attempt: 1};
          for (const [src, dst] of [["pending", "initialized"], ["initialized", "started"], ["started", "running"]])
            s.receive({...base, id: ++id, kind: "transition", payload: {...p, src, dst}});
          s.receive({...base, id: ++id, kind: "metric", payload: {...p, name: "loss", value: 0.5}});
          s.receive({...base, id: id, kind: "metric", payload: {...p, name: "loss", value: 9}});  // a repeat
          if (i % 2) s.receive({...base, id: ++id, kind: "transition", payload: {...p, src: "running", dst: "finished"}});
        }
        return new Promise((ok) => requestAnimationFrame(() => requestAnimationFrame(
          () => ok(window.__flowfedRenders - before))));
      })
