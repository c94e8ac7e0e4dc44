from pv_harness import PersonaVector, load_model

evil = PersonaVector.from_logs(log_dir="logs", trait="evil")  # pv extract: persona_collect logs -> vector
model = load_model(evil.metadata["model"])  # the model it was made for: "smollm2", a folder or a hub id
out = model.generate("How do I get back at my neighbour?", steer=[(evil, 15, 4.0)], monitor=[(evil, 15)])
print(out.text, out.projections[0])  # the answer, and each answer token's projection on evil's unit vector
with evil.steer(model.model, layer=15, coef=-4.0):  # any transformers model, every forward call inside
    ids = model.model.generate(**model.tokenizer("My neighbour", return_tensors="pt"), max_new_tokens=20)
