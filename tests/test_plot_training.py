"""eval/plot_training.py draws codec and adapter run logs and fails clearly on a folder without them."""

from __future__ import annotations

from conftest import load_eval_script



def _tool():
    return load_eval_script("plot_training")


def test_codec_and_adapter_logs_are_drawn(tmp_path):
    tool = _tool()
    codec, adapter = tmp_path / "codec", tmp_path / "adapter"
    codec.mkdir()
    adapter.mkdir()
    (codec / "train_log.csv").write_text("step,loss,mse,psnr,bpp,aux_loss,lr,sec_per_step\n"
                                         + "".join(f"{s},{50 - s / 10},0.01,{20 + s / 50},{3 - s / 200},9,0.0001,1\n" for s in range(10, 210, 10)))
    (codec / "val_log.csv").write_text("step,quality,bpp,psnr\n100,0,1.0,22\n100,9,4.0,25\n200,0,0.8,23\n200,9,3.5,27\n")
    (adapter / "train_log.csv").write_text("step,loss,mse_low,mse_high,lambda_high,bpp,sec_per_step\n"
                                           + "".join(f"{s},0.5,0.1,0.4,1.0,,2\n" for s in range(10, 60, 10)))
    (adapter / "val_log.csv").write_text("step,quality,bpp,cos_base,cos_adapter,mse_base,mse_adapter\n"
                                         "20,1,0.5,0.90,0.91,0.5,0.45\n40,1,0.5,0.90,0.93,0.5,0.40\n")
    assert tool.main([str(codec)]) == 0 and (codec / "training.png").stat().st_size > 0
    two_panels = (codec / "training.png").read_bytes()
    (codec / "val_bdrate.csv").write_text("step,bd_rate_vs_webp\n100,30.5\n200,28.1\n")
    (codec / "val_bdrate_raw.csv").write_text("step,bd_rate_vs_webp\n100,30.9\n200,28.0\n")
    assert tool.main([str(codec)]) == 0  # a third panel: the held-out BD-rate, average and training weights
    from PIL import Image

    assert Image.open(codec / "training.png").width > Image.open(__import__("io").BytesIO(two_panels)).width
    assert tool.main([str(adapter), "-o", str(tmp_path / "a.png")]) == 0 and (tmp_path / "a.png").stat().st_size > 0
    assert tool.main([str(tmp_path / "nowhere")]) == 1
