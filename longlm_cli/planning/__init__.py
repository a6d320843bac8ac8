"""The plan for a document (does it fit, which W and G, how much memory), its report, and `longlm tune`'s saved
winners; torch-free, so `longlm plan` stays fast."""
