"""``qpm demo``: a local Gradio app over a trained model (optional extra ``qpm[demo]``)."""
